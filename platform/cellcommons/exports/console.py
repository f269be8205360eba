"""What `cellcommons worker` and `cellcommons export run|status` do, with rich output; cli.py only parses."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cellcommons.background import stop_on_signals
from cellcommons.db import with_database
from cellcommons.errors import Conflict, InvalidInput
from cellcommons.exports import service
from cellcommons.exports.models import ExportJob
from cellcommons.exports.worker import ExportWorker
from cellcommons.exports.writer import return_freed_memory
from cellcommons.observability import metrics
from cellcommons.settings import Settings
from cellcommons.storage import ObjectStore


def _with_worker(settings: Settings, work: Callable[[ExportWorker], Awaitable[Any]], **options: Any) -> Any:
    return_freed_memory()
    store = ObjectStore.from_settings(settings)
    return with_database(settings, lambda database: work(ExportWorker(database, store, settings, **options)))


def job_line(job: ExportJob) -> str:
    line = f"export {job.id}: {job.status.value} — {job.rows_written:,} rows, {job.bytes_written:,} bytes"
    if job.rows_quarantined:
        line += f", {job.rows_quarantined:,} rows quarantined"
    if job.sha256:
        line += f"; sha256 {job.sha256}"
    if job.error_code:
        line += f"; {job.error_code}: {job.error_message}"
    return line


def parse_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not an export id (a UUID)", field="export") from None


def run_worker(
    settings: Settings, interval: float, console: Console, metrics_at: tuple[str, int | None] = ("127.0.0.1", None)
) -> None:
    """Run queued exports until SIGINT/SIGTERM; the job in progress goes back to the queue, its upload aborted.
    With a port, its metrics are served there meanwhile."""

    async def work(worker: ExportWorker) -> None:
        stop = stop_on_signals()
        console.print(f"export worker {worker.name}: polling every {interval:g} s (Ctrl-C stops)", highlight=False)
        await worker.serve(stop, interval, lambda job: console.print(job_line(job), highlight=False))

    host, port = metrics_at
    with metrics.exposed(metrics.Metrics(), port, host):
        _with_worker(settings, work)


def run_one(settings: Settings, export_id: uuid.UUID, console: Console) -> ExportJob:
    """Claim one queued export and run it here, with a live count of rows and bytes; Ctrl-C or SIGTERM puts it
    back in the queue (its upload aborted)."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(f"export {export_id}: starting")

        def advance(rows: int, size: int) -> None:
            bar.update(task, description=f"export {export_id}: {rows:,} rows, {size / 1e6:,.1f} MB")

        async def work(worker: ExportWorker) -> ExportJob:
            stop_on_signals(worker.stopping)  # stop as the worker does: the job back to the queue
            if await worker.claim(export_id) is None:
                raise Conflict("no queued export with this id (running elsewhere, finished, or missing)", field="id")
            return await worker.run(export_id)

        return _with_worker(settings, work, on_progress=advance)


def job_status(settings: Settings, export_id: uuid.UUID) -> str:
    async def work(worker: ExportWorker) -> ExportJob:
        async with worker.database.unit_of_work() as session:
            [job] = await service.operator_listing(session, export_id, 1)
            return job

    return job_line(_with_worker(settings, work))


def status_table(settings: Settings, limit: int) -> Table:
    async def work(worker: ExportWorker) -> list[ExportJob]:
        async with worker.database.unit_of_work() as session:
            return await service.operator_listing(session, None, limit)

    table = Table("export", "requested", "by", "status", "rows", "bytes", "quarantined", "sha256 / error")
    for job in _with_worker(settings, work):
        outcome = job.sha256 or (f"{job.error_code}: {job.error_message}" if job.error_code else "")
        counts = (f"{job.rows_written:,}", f"{job.bytes_written:,}", f"{job.rows_quarantined:,}")
        requested = f"{job.created_at:%Y-%m-%d %H:%M}"
        table.add_row(str(job.id), requested, job.requested_by, job.status.value, *counts, outcome)
    return table
