"""Object storage and PostgreSQL stop while exports run: the job goes back to the queue (not failed, not
half-written), the worker outlives the outage, and the export completes once they are back.

The servers are the module's own (tests/outages.py), so they can be stopped and started."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from tests.exports.conftest import make_world, request
from tests.outages import own_servers

from cellcommons.exports.models import ExportStatus
from cellcommons.exports.worker import Progress

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


async def test_a_job_given_back_in_an_outage_is_claimed_again_after_longer_and_longer_pauses(outage):
    """Each time object storage makes the worker give the job back, it waits twice as long before the next
    claim (with jitter), instead of claiming and giving it back as fast as it can."""
    servers, world = outage
    job = await request(world, "lowlands")
    given_back: list[float] = []
    stop = asyncio.Event()

    def seen(done) -> None:
        given_back.append(asyncio.get_running_loop().time())
        if len(given_back) == 4:
            stop.set()

    servers.stop_s3()
    try:
        await asyncio.wait_for(world.worker().serve(stop, interval=0.2, on_job=seen), 60)
    finally:
        servers.start_s3()
    first, _, third = (later - earlier for earlier, later in itertools.pairwise(given_back))
    assert third > first + 0.6  # pauses of 0.4 s and then 1.6 s (±20%), on top of the time each attempt takes
    after = await world.job(job.id)
    assert (after.status, after.attempts) == (ExportStatus.queued, 0)


async def test_the_lease_is_renewed_again_once_the_database_is_back(outage):
    """A heartbeat that meets a database outage keeps beating: once the database answers, the lease is renewed,
    and no other worker can take the running job."""
    servers, world = outage
    job = await request(world, "stroma", agreement="stroma")
    worker = world.worker(lease=timedelta(seconds=6))  # a beat every 2 s
    assert await worker.claim(job.id) == job.id
    beating = asyncio.create_task(worker._heartbeat(job.id, Progress(rows=7)))
    try:
        await asyncio.to_thread(servers.stop_postgres)
        await asyncio.sleep(2.5)  # a beat meets the outage
        await asyncio.to_thread(servers.start_postgres)
        await _when_the_database_answers(lambda: world.job(job.id))
        renewed = await _renewed(world, job.id)
        assert not beating.done(), "the outage ended the heartbeat"
        assert renewed.rows_written == 7 and renewed.lease_owner == worker.name
        assert await world.worker().claim(job.id) is None
    finally:
        beating.cancel()


async def _renewed(world, export_id):
    """The job once a beat after now has renewed its lease."""
    start = datetime.now(UTC)
    for _ in range(50):
        job = await world.job(export_id)
        if job.rows_written == 7 and job.lease_expires_at > start + timedelta(seconds=4):
            return job
        await asyncio.sleep(0.2)
    raise AssertionError("the lease was not renewed after the outage")
