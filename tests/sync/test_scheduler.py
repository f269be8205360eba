"""Schedules and the advisory lock: two schedulers racing for the same due source make one run."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select, update
from tests.processes import answers, cli_environment, wait_until
from tests.sync.conftest import batch_record, memory_connector

from cellcommons.db import Database
from cellcommons.demo.stack import free_port
from cellcommons.errors import InvalidInput
from cellcommons.sync.models import RunStatus, RunTrigger, SyncRun, SyncSource
from cellcommons.sync.runtime import AlreadyRunning, SyncRuntime
from cellcommons.sync.schedule import check_schedule, next_fire
from cellcommons.sync.scheduler import tick
from cellcommons.sync.secrets import seal


async def test_two_schedulers_racing_make_one_run(env):
    rows = [batch_record(f"LOT-{i}") for i in range(300)]
    slow = memory_connector(rows, before_page=lambda offset: asyncio.sleep(0.2))
    await env.add_source(due=True)
    # A second scheduler process: its own engine and connections to the same database.
    other = Database(env.settings)
    try:
        runs = await asyncio.gather(
            tick(env.runtime(slow)), tick(SyncRuntime(other, env.settings, connectors={"memory": slow}))
        )
    finally:
        await other.dispose()
    assert sorted(len(made) for made in runs) == [0, 1]
    async with env.database.unit_of_work() as session:
        (run,) = (await session.scalars(select(SyncRun))).all()
        source = await session.scalar(select(SyncSource))
    assert run.trigger is RunTrigger.schedule and run.read_count == 300
    assert len(await env.lots()) == 300
    assert source.next_run_at > datetime.now(UTC)  # not due again until its next cron time
    assert await tick(env.runtime(slow)) == []


async def test_a_manual_run_while_another_holds_the_source_is_refused(env):
    started = asyncio.Event()

    async def hold(offset):
        started.set()
        await asyncio.sleep(0.5)

    await env.add_source()
    connector = memory_connector([batch_record("LOT-1")], before_page=hold)
    first = asyncio.create_task(env.runtime(connector).run("lims"))
    await started.wait()
    with pytest.raises(AlreadyRunning, match="being synced by another process"):
        await env.runtime(connector).run("lims")
    assert (await first).read_count == 1


def test_schedules_are_five_field_cron_expressions():
    assert check_schedule("*/15  * * * *") == "*/15 * * * *"
    assert next_fire("0 3 * * *", datetime(2026, 5, 1, 12, tzinfo=UTC)) == datetime(2026, 5, 2, 3, tzinfo=UTC)
    for bad in ("every hour", "* * * *", "61 * * * *"):
        with pytest.raises(InvalidInput) as caught:
            check_schedule(bad)
        assert caught.value.field == "schedule"
    for never in ("0 0 31 2 *", "0 0 30 2 *"):
        with pytest.raises(InvalidInput) as caught:
            check_schedule(never)
        assert (caught.value.field, caught.value.message) == ("schedule", f"{never!r} never fires: no date matches it")


async def test_a_shutdown_stops_the_run_after_a_committed_page_and_the_next_run_resumes(env):
    rows = [batch_record(f"LOT-{i:03d}") for i in range(250)]
    stop = asyncio.Event()

    def shut_down_during_page_two(offset):
        if offset == 100:
            stop.set()  # SIGTERM arrives while the second page is read

    await env.add_source(due=True)
    interrupted = await tick(env.runtime(memory_connector(rows, before_page=shut_down_during_page_two), stop=stop))
    assert [run.status for run in interrupted] == [RunStatus.interrupted]
    assert "resumes from its bookmark" in interrupted[0].error
    # The first page was landing when the signal came (the second is read ahead): it commits, nothing after it.
    assert len(await env.lots()) == 100
    async with env.database.unit_of_work() as session:
        source = await session.scalar(select(SyncSource))
    assert source.consecutive_failures == 0 and source.next_run_at <= datetime.now(UTC)  # due again, not a failure

    (resumed,) = await tick(env.runtime(memory_connector(rows)))
    assert (resumed.status, resumed.read_count) == (RunStatus.ok, 150)
    assert await env.lots() == [r["lot_number"] for r in rows]


async def test_a_stopping_scheduler_starts_no_further_source(env):
    stop = asyncio.Event()
    stop.set()
    await env.add_source(due=True)
    assert await tick(env.runtime(memory_connector([batch_record("LOT-1")]), stop=stop)) == []
    assert await env.lots() == []


def test_the_scheduler_process_serves_its_metrics_and_stops_on_sigterm(fresh_settings):
    port = free_port()
    scheduler = subprocess.Popen(
        ["cellcommons", "scheduler", "--interval", "1", "--metrics-port", str(port)],
        env=cli_environment(fresh_settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_until(lambda: scheduler.poll() is not None or answers(url), "the scheduler serves metrics")
        assert scheduler.poll() is None, scheduler.communicate()[0]
        scraped = httpx.get(url).text
        assert "# TYPE cellcommons_sync_runs_total counter" in scraped
        scheduler.send_signal(signal.SIGTERM)
        output = scheduler.communicate(timeout=30)[0]
    finally:
        if scheduler.poll() is None:
            scheduler.kill()
    assert scheduler.returncode == 0 and "Traceback" not in output


async def test_a_source_whose_secrets_do_not_open_fails_its_run_and_the_others_still_run(env):
    await env.add_source("aaa-moved", due=True)  # due first
    await env.add_source("bbb-fine", due=True)
    async with env.database.unit_of_work() as session:  # sealed for another source: bound to that name
        moved = seal(env.settings, "elsewhere", {"token": "x"})
        await session.execute(update(SyncSource).where(SyncSource.name == "aaa-moved").values(sealed_secrets=moved))
    runtime = env.runtime(memory_connector([batch_record("A1")]))
    runs = await tick(runtime)
    assert [(r.status, r.error) for r in runs] == [
        (RunStatus.failed, "the secrets of source 'aaa-moved' cannot be opened with this secret key"),
        (RunStatus.ok, None),
    ]
    assert await env.lots() == ["A1"]
    async with env.database.unit_of_work() as session:
        source = await session.scalar(select(SyncSource).where(SyncSource.name == "aaa-moved"))
    assert source.next_run_at > datetime.now(UTC) and source.consecutive_failures == 1
    assert await tick(runtime) == []  # not due again until its next cron time
