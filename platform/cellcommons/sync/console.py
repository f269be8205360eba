"""What the `cellcommons sync` and `scheduler` commands do, with rich output; cli.py only parses arguments.

Nothing here prints a source's secrets: listings show the names of its secrets, never their values.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cellcommons.background import settle_heap, stop_on_signals
from cellcommons.db import Database, with_database
from cellcommons.observability import metrics
from cellcommons.settings import Settings
from cellcommons.sync import repository, service
from cellcommons.sync.models import RunTrigger, SyncRun
from cellcommons.sync.runtime import SyncRuntime
from cellcommons.sync.scheduler import scheduler_duties
from cellcommons.sync.secrets import unseal


def run_line(name: str, run: SyncRun) -> str:
    line = (
        f"{name}: {run.status.value} — read {run.read_count:,}, upserted {run.upserted_count:,}, "
        f"quarantined {run.quarantined_count:,}, deleted {run.deleted_count:,}"
    )
    return line + (f"; {run.error}" if run.error else "")


def add_source(settings: Settings, **fields: Any) -> str:
    async def work(database: Database) -> str:
        async with database.unit_of_work() as session:
            source = await service.add_source(session, settings, **fields)
            return f"added {source.name} ({source.connector}); next run {source.next_run_at:%Y-%m-%d %H:%M %Z}"

    return with_database(settings, work)


def sources_table(settings: Settings) -> Table:
    async def work(database: Database) -> list:
        async with database.unit_of_work() as session:
            return await service.list_sources(session)

    table = Table("source", "institution", "connector", "schedule", "next run", "breaker", "config", "secrets")
    for slug, source in with_database(settings, work):
        breaker = f"open until {source.breaker_open_until:%H:%M}" if source.breaker_open_until else "closed"
        config = ", ".join(f"{k}={v}" for k, v in sorted(source.config.items()))
        secrets = ", ".join(sorted(unseal(settings, source.name, source.sealed_secrets))) or "—"
        next_run = f"{source.next_run_at:%Y-%m-%d %H:%M}" if source.next_run_at else "—"
        table.add_row(source.name, slug, source.connector, source.schedule, next_run, breaker, config, secrets)
    return table


def runs_table(settings: Settings, source: str | None, limit: int) -> Table:
    async def work(database: Database) -> list:
        async with database.unit_of_work() as session:
            return await repository.runs_of(session, source, limit)

    table = Table("source", "started", "trigger", "status", "read", "upserted", "quarantined", "deleted", "error")
    for name, run in with_database(settings, work):
        table.add_row(name, f"{run.created_at:%Y-%m-%d %H:%M:%S}", run.trigger.value, run.status.value,
                      f"{run.read_count:,}", f"{run.upserted_count:,}", f"{run.quarantined_count:,}",
                      f"{run.deleted_count:,}", run.error or "")  # fmt: skip
    return table


def quarantine_table(settings: Settings, source: str, limit: int) -> Table:
    async def work(database: Database) -> list:
        async with database.unit_of_work() as session:
            return await service.open_quarantine(session, source, limit)

    table = Table("held since", "stream", "key", "problems")
    for held in with_database(settings, work):
        problems = "; ".join(f"{e['field']}: {e['message']}" for e in held.errors)
        table.add_row(f"{held.created_at:%Y-%m-%d %H:%M}", held.stream, held.record_key or "—", problems)
    return table


def run_now(settings: Settings, name: str, console: Console, *, replay_of: str | None = None) -> SyncRun:
    """One run with a live count of the records read per stream."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
        tasks: dict[str, Any] = {}
        totals: dict[str, int] = {}

        def advance(stream: str, records: int) -> None:
            if stream not in tasks:
                tasks[stream] = bar.add_task(stream)
            totals[stream] = totals.get(stream, 0) + records
            bar.update(tasks[stream], description=f"{name}/{stream}: {totals[stream]:,} records")

        async def work(database: Database) -> SyncRun:
            settle_heap()
            runtime = SyncRuntime(database, settings, progress=advance)
            if replay_of is None:
                return await runtime.run(name)
            async with database.unit_of_work() as session:
                start = await repository.start_bookmarks(session, name, replay_of)
            return await runtime.run(name, trigger=RunTrigger.replay, from_bookmarks=start)

        return with_database(settings, work)


def replay_quarantine(settings: Settings, name: str) -> SyncRun:
    return with_database(settings, lambda database: SyncRuntime(database, settings).replay_quarantine(name))


def run_scheduler(
    settings: Settings, interval: float, console: Console, metrics_at: tuple[str, int | None] = ("127.0.0.1", None)
) -> None:
    """Tick until SIGINT/SIGTERM; the run in progress lands the page it has, ends `interrupted` (due again at
    once) and the lock is released. With a port, its metrics are served there meanwhile."""

    async def work(database: Database) -> None:
        settle_heap()
        stop = stop_on_signals()
        console.print(f"scheduler: checking for due sources every {interval:g} s (Ctrl-C stops)", highlight=False)

        def report(runs: list[SyncRun]) -> None:
            for run in runs:
                console.print(run_line(str(run.source_id), run), highlight=False)

        await scheduler_duties(database, settings, stop, interval, report)

    host, port = metrics_at
    with metrics.exposed(metrics.Metrics(), port, host):
        with_database(settings, work)
