"""Schedules and the advisory lock: two schedulers racing for the same due source make one run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from tests.sync.conftest import batch_record, memory_connector

from cellcommons.db import Database
from cellcommons.errors import InvalidInput
from cellcommons.sync.models import RunTrigger, SyncRun, SyncSource
from cellcommons.sync.runtime import AlreadyRunning, SyncRuntime
from cellcommons.sync.schedule import check_schedule, next_fire
from cellcommons.sync.scheduler import tick


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
