"""Objects no record names any more, against the real PostgreSQL and S3 server, with committed data (the cleanup
reads through connections of its own).

Which orphans arise: a file replaced on a draft (the new upload's key replaces the old on the distribution; the
old object stays) and an export whose worker died after its upload but before its commit (the next attempt
writes a key of its own). A succeeded job's result is never replaced (a finished job is never claimed again) and
a failed job never names an object, so neither needs a case of its own. The cleanup deletes what no record names
once it is older than the grace, and keeps what a published or draft version of any institution, a pending
upload or a job (finished, in flight, or under an agreement that ended) names or may still name."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from tests.exports.conftest import make_world, request
from tests.storage.files import draft_dataset, institution, member, published_file, put, remove_buckets, upload
from tests.storage.test_cleanup import sha

from cellcommons.access.models import Agreement, AgreementStatus
from cellcommons.auth.principal import Role
from cellcommons.catalogue.models import Distribution
from cellcommons.db import Database
from cellcommons.exports.models import ExportJob, ExportStatus
from cellcommons.storage import ObjectStore, buckets, cleanup, uploads
from cellcommons.storage.models import FileUpload, UploadStatus

FIRST, SECOND, OTHER = b"donor,marker\nD-01,CD73\n", b"donor,marker\nD-01,CD90\n", b"donor,marker\nD-02,CD105\n"
# The grace ends in the future: every object these tests wrote counts as old (S3 dates cannot be set back).
ALL_OLD = timedelta(minutes=-5)


def _keys(store: ObjectStore, bucket: str) -> set[str]:
    return {o.object_name for o in store.client.list_objects(bucket, recursive=True)}


@pytest.fixture
async def stored(stack):
    """A database of the test's own, with its object store."""
    settings = stack.new_database()
    database, store = Database(settings), ObjectStore.from_settings(settings)
    yield settings, database, store
    await database.dispose()
    remove_buckets(store, settings.bucket(""))
    stack.drop(settings)


class Lost(Exception):
    """The completion's transaction never committed."""


async def _completion_lost(database: Database, store, settings, submitter, distribution_id) -> uuid.UUID:
    """An upload whose completion moved the file to its key and then lost its transaction: still pending."""
    async with database.unit_of_work() as session:
        ticket = await uploads.request_upload(
            session, store, settings, submitter, distribution_id, sha256=sha(OTHER), size_bytes=len(OTHER)
        )
    assert await put(ticket.url, OTHER) == 200
    with pytest.raises(Lost):
        async with database.unit_of_work() as session:
            await uploads.complete_upload(session, store, settings, submitter, ticket.upload_id)
            raise Lost
    return ticket.upload_id


async def test_a_file_replaced_on_a_draft_leaves_an_orphan_that_goes_and_every_named_file_stays(stored):
    settings, database, store = stored
    async with database.unit_of_work() as session:
        leiden, maple = await institution(session, "leiden-scgt"), await institution(session, "maple-ccrm")
        draft = await draft_dataset(session, leiden, ["flow.csv", "counts.csv", "later.csv"])
        flow, counts, later = draft.distributions
        submitter = member(leiden, Role.submitter)
        replaced = (await upload(session, store, settings, submitter, flow.id, FIRST)).storage_key
        current = (await upload(session, store, settings, submitter, flow.id, SECOND)).storage_key
        kept = (await upload(session, store, settings, submitter, counts.id, FIRST)).storage_key
        other = (await draft_dataset(session, maple, ["maple.csv"])).distributions[0]
        theirs = (await upload(session, store, settings, member(maple, Role.submitter), other.id, FIRST)).storage_key
    lost = await _completion_lost(database, store, settings, submitter, later.id)
    published = await published_file(database, store, settings, "leiden-scgt", "restricted", OTHER)
    async with database.unit_of_work() as session:
        published_key = (await session.get(Distribution, published.distribution_id)).storage_key
    leiden_bucket, maple_bucket = (
        buckets.institution_bucket(settings, leiden.id),
        buckets.institution_bucket(settings, maple.id),
    )
    in_flight = buckets.file_key(draft.id, later.id, lost)

    # The orphan arises: no distribution names the replaced file, yet it stays in the bucket.
    async with database.unit_of_work() as session:
        named = set(await session.scalars(select(Distribution.storage_key)))
    assert replaced not in named and replaced in _keys(store, leiden_bucket)
    assert in_flight in _keys(store, leiden_bucket) and in_flight not in named

    assert (await cleanup.clean_storage(database, store, settings)).unreferenced_files == 0  # within the grace
    assert replaced in _keys(store, leiden_bucket)

    cleaned = await cleanup.clean_storage(database, store, settings, ttl=ALL_OLD)
    assert cleaned.unreferenced_files == 1
    assert _keys(store, leiden_bucket) == {current, kept, published_key, in_flight}
    assert _keys(store, maple_bucket) == {theirs}
    async with database.unit_of_work() as session:
        assert (await session.get(FileUpload, lost)).status is UploadStatus.pending
        await uploads.complete_upload(session, store, settings, submitter, lost)  # the retry still finds it
    assert (await cleanup.clean_storage(database, store, settings, ttl=ALL_OLD)).unreferenced_files == 0


async def test_lookups_go_in_pages(stored, monkeypatch):
    """More replaced files than a page: every page is looked up and swept."""
    monkeypatch.setattr(cleanup, "PAGE", 2)
    settings, database, store = stored
    async with database.unit_of_work() as session:
        leiden = await institution(session, "leiden-scgt")
        draft = await draft_dataset(session, leiden, ["flow.csv"])
        submitter = member(leiden, Role.submitter)
        for content in (FIRST, SECOND, OTHER, FIRST, SECOND):
            last = (await upload(session, store, settings, submitter, draft.distributions[0].id, content)).storage_key
    cleaned = await cleanup.clean_storage(database, store, settings, ttl=ALL_OLD)
    assert cleaned.unreferenced_files == 4
    assert _keys(store, buckets.institution_bucket(settings, leiden.id)) == {last}


@pytest.fixture
async def world(stack):
    settings = stack.new_database()
    made = await make_world(settings)
    yield made
    await made.database.dispose()
    remove_buckets(made.store, settings.bucket(""))
    stack.drop(settings)


async def _died_after_uploading(world, export_id: uuid.UUID) -> str:
    """Run the job until its Parquet is in the bucket, then end the worker before it commits (as a process
    killed there would): the job stays running under a lease that runs out. The key it left."""
    worker, bucket = world.worker(lease=timedelta(seconds=1)), buckets.exports_bucket(world.settings)
    assert await worker.claim(export_id) == export_id
    async with world.database.unit_of_work() as session:
        # Holding the job's row keeps the worker's commit waiting once its upload is done.
        await session.scalar(select(ExportJob).where(ExportJob.id == export_id).with_for_update())
        running = asyncio.create_task(worker.run(export_id))
        for _ in range(300):
            left = world.exported_keys("lowlands")
            if left:
                break
            await asyncio.sleep(0.1)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert len(left) == 1 and world.store.exists(bucket, left[0])
    return left[0]


async def test_an_export_whose_worker_died_after_uploading_leaves_an_orphan_that_goes_once_the_job_ends(world):
    job = await request(world, "lowlands")
    abandoned = await _died_after_uploading(world, job.id)
    assert (await world.job(job.id)).status is ExportStatus.running

    cleaned = await cleanup.clean_storage(world.database, world.store, world.settings, ttl=ALL_OLD)
    assert cleaned.unreferenced_exports == 0  # the job may still be in flight: nothing of it goes
    assert world.exported_keys("lowlands") == [abandoned]

    await asyncio.sleep(1)  # the dead worker's lease runs out
    second = world.worker()
    assert await second.claim(job.id) == job.id
    done = await second.run(job.id)
    assert done.status is ExportStatus.succeeded
    assert sorted(world.exported_keys("lowlands")) == sorted([abandoned, done.result_key])  # the orphan arose

    cleaned = await cleanup.clean_storage(world.database, world.store, world.settings, ttl=ALL_OLD)
    assert cleaned.unreferenced_exports == 1
    assert world.exported_keys("lowlands") == [done.result_key]

    # The agreement ends: the job still names its result, which stays (retention is not the sweep's to decide).
    async with world.database.unit_of_work() as session:
        agreement = world.agreements["lowlands"].id
        await session.execute(update(Agreement).where(Agreement.id == agreement).values(status=AgreementStatus.expired))
    cleaned = await cleanup.clean_storage(world.database, world.store, world.settings, ttl=ALL_OLD)
    assert cleaned.unreferenced_exports == 0
    assert world.exported_keys("lowlands") == [done.result_key]


async def test_objects_not_of_the_platforms_making_are_left_alone(world):
    """Keys the platform never writes (a copy an operator put there, a tool's) are not the sweep's to judge."""
    leiden = buckets.institution_bucket(world.settings, world.consortium.institutions["leiden"].id)
    exports = buckets.exports_bucket(world.settings)
    foreign = {exports: ["README.txt", f"{uuid.uuid4()}/not-a-job.parquet"],
               leiden: ["files/elsewhere", f"files/{uuid.uuid4()}/not-an-upload"]}  # fmt: skip
    for bucket, keys in foreign.items():
        world.store.ensure_bucket(bucket)
        for key in keys:
            world.store.put_stream(bucket, key, io.BytesIO(FIRST), len(FIRST))
    cleaned = await cleanup.clean_storage(world.database, world.store, world.settings, ttl=ALL_OLD)
    assert (cleaned.unreferenced_files, cleaned.unreferenced_exports) == (0, 0)
    assert all(set(keys) <= _keys(world.store, bucket) for bucket, keys in foreign.items())
