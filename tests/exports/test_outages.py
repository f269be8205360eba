"""Object storage and PostgreSQL stop while exports run: the job goes back to the queue (not failed, not
half-written), the worker outlives the outage, and the export completes once they are back.

The servers are the module's own (tests/outages.py), so they can be stopped and started."""

from __future__ import annotations

import asyncio

import pytest
from tests.exports.conftest import make_world, request
from tests.outages import own_servers

from cellcommons.exports.models import ExportStatus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def outage(tmp_path_factory):
    with own_servers(tmp_path_factory.mktemp("export-outage")) as state:
        world = await make_world(state.settings)
        yield state, world
        await world.database.dispose()


async def test_an_export_meeting_an_object_storage_outage_is_queued_again_and_completes_after(outage):
    servers, world = outage
    job = await request(world, "lowlands")
    worker = world.worker()
    servers.stop_s3()
    try:
        interrupted = await worker.run_next()
    finally:
        servers.start_s3()
    assert interrupted.id == job.id
    assert (interrupted.status, interrupted.attempts, interrupted.error_code) == (ExportStatus.queued, 0, None)

    done = await worker.run_next()
    assert (done.id, done.status) == (job.id, ExportStatus.succeeded)
    assert world.exported_keys("lowlands") == [done.result_key]  # the interrupted attempt left nothing
    assert done.sha256 and await world.result(done, "lowlands")


async def test_the_worker_outlives_a_database_outage_and_runs_what_is_queued_after(outage):
    servers, world = outage
    stop = asyncio.Event()
    serving = asyncio.create_task(world.worker().serve(stop, interval=0.1))
    try:
        await asyncio.to_thread(servers.stop_postgres)
        await asyncio.sleep(1)  # polls meet the outage
        assert not serving.done(), "the outage ended the worker"
        await asyncio.to_thread(servers.start_postgres)
        job = await _when_the_database_answers(lambda: request(world, "stroma", agreement="stroma"))
        done = await world.finished(job.id, 60)
        assert done.status is ExportStatus.succeeded, done.error_message
    finally:
        stop.set()
        await asyncio.wait_for(serving, 30)
    assert world.exported_keys("stroma") == [done.result_key]


async def _when_the_database_answers(work):
    """The first call after a restart may take a pooled connection from before it; the next one works."""
    for _ in range(50):
        try:
            return await work()
        except Exception:
            await asyncio.sleep(0.2)
    return await work()
