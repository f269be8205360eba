"""PostgreSQL stops in the middle of a scheduled sync run: the scheduler outlives the outage, and once the
database is back the source runs again from its bookmark — nothing lost, nothing twice, the broken run marked.

The database is the module's own embedded server (tests/outages.py), so it can be stopped and started."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from tests.outages import own_servers
from tests.sync.conftest import batch_record, make_env, memory_connector

from cellcommons.catalogue.models import Batch
from cellcommons.db import Database
from cellcommons.sync.models import RunStatus, SyncRun
from cellcommons.sync.repository import ABANDONED
from cellcommons.sync.scheduler import serve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def outage(tmp_path_factory):
    with own_servers(tmp_path_factory.mktemp("sync-outage")) as state:
        yield state


async def _count(database: Database, query) -> int:
    async with database.unit_of_work() as session:
        return await session.scalar(query)


async def test_the_scheduler_outlives_a_database_outage_and_resumes_from_the_bookmark(outage):
    rows = [batch_record(f"LOT-{i:03d}") for i in range(500)]
    stopped = asyncio.Event()

    def database_stops_during_page_three(offset):
        # Read ahead while page two lands. Stopped here and now (blocking the event loop, as the server dies
        # under it): awaited in a thread, the stop would be cancelled with the read-ahead once page two failed.
        if offset == 200 and not stopped.is_set():
            outage.stop_postgres()
            stopped.set()

    env = await make_env(outage.settings)
    database = env.database
    try:
        await env.add_source(due=True)
        runtime = env.runtime(memory_connector(rows, before_page=database_stops_during_page_three))
        stop = asyncio.Event()
        scheduler = asyncio.create_task(serve(runtime, 0.2, stop, lambda runs: None))
        await asyncio.wait_for(stopped.wait(), 60)
        await asyncio.sleep(1)  # a few ticks meet the outage
        assert not scheduler.done(), "the outage ended the scheduler"
        await asyncio.to_thread(outage.start_postgres)

        lots = select(func.count()).select_from(Batch)
        for _ in range(300):
            try:
                if await _count(database, lots) == len(rows):
                    break
            except Exception:  # the pool may still hand out a connection from before the restart
                pass
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(scheduler, 30)

        assert await _count(database, lots) == len(rows)
        async with database.unit_of_work() as session:
            runs = (await session.scalars(select(SyncRun).order_by(SyncRun.created_at))).all()
    finally:
        await database.dispose()
    broken, resumed = runs[0], runs[-1]
    # Page three is read ahead while page two lands: the database stops then, so only page one committed.
    assert (broken.status, broken.error, broken.upserted_count) == (RunStatus.failed, ABANDONED, 100)
    assert (resumed.status, resumed.read_count) == (RunStatus.ok, 400)
    assert resumed.start_bookmarks == {"batches": {"offset": 100}}
