"""The staging cleanup against the real PostgreSQL and S3 server: abandoned uploads expire with what they
staged, orphans go, and nothing a live upload still needs is touched."""

from __future__ import annotations

import asyncio
import hashlib
import io
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from tests.processes import cli_environment
from tests.storage.files import draft_dataset, institution, member, put, upload

from cellcommons.audit.models import AuditEvent
from cellcommons.audit.verify import verify_database
from cellcommons.auth.principal import Role
from cellcommons.db import Database
from cellcommons.storage import ObjectStore, buckets, cleanup, uploads
from cellcommons.storage.models import FileUpload, UploadStatus

PART = 5 * 1024 * 1024
DATA = b"donor,marker\nD-01,CD73\n"
LONG_AGO = timedelta(days=2)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _single(session, store, settings, principal, distribution_id, send: bool = True) -> FileUpload:
    ticket = await uploads.request_upload(
        session, store, settings, principal, distribution_id, sha256=sha(DATA), size_bytes=len(DATA)
    )
    if send:
        assert await put(ticket.url, DATA) == 200
    return await session.get(FileUpload, ticket.upload_id)


async def _multipart_with_one_part(session, store, settings, principal, distribution_id) -> FileUpload:
    ticket = await uploads.request_multipart_upload(
        session, store, settings, principal, distribution_id, sha256="a" * 64, size_bytes=2 * PART, part_size=PART
    )
    assert await put(ticket.parts[0].url, b"x" * PART) == 200
    return await session.get(FileUpload, ticket.upload_id)


def _left_behind(store, bucket: str) -> tuple[list[str], list[str]]:
    objects = sorted(o.object_name for o in store.client.list_objects(bucket, recursive=True))
    unfinished = sorted(u.object_name for u in store.client._list_multipart_uploads(bucket).uploads)
    return objects, unfinished


async def _abandon(session, *found: FileUpload) -> None:
    for row in found:
        row.url_expires_at = datetime.now(UTC) - LONG_AGO
    await session.flush()


async def test_abandoned_uploads_expire_with_their_bytes_and_parts_and_live_ones_stay(
    session, object_store, settings, leiden, draft
):
    submitter = member(leiden, Role.submitter)
    flow, counts = draft.distributions
    single = await _single(session, object_store, settings, submitter, flow.id)
    parts = await _multipart_with_one_part(session, object_store, settings, submitter, counts.id)
    live = await _single(session, object_store, settings, submitter, counts.id)
    done = await upload(session, object_store, settings, submitter, flow.id, DATA)
    await _abandon(session, single, parts)

    before = datetime.now(UTC) - cleanup.STAGING_TTL
    assert await cleanup.expire_abandoned(session, object_store, settings, before) == 2
    assert (single.status, parts.status, live.status) == (UploadStatus.expired, UploadStatus.expired,
                                                          UploadStatus.pending)  # fmt: skip
    assert single.finished_at is not None and parts.finished_at is not None
    bucket = buckets.institution_bucket(settings, leiden.id)
    assert _left_behind(object_store, bucket) == (sorted([live.staging_key, done.storage_key]), [])
    events = (await session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(2))).all()
    assert {(e.actor, e.action, e.details["upload"]) for e in events} == {
        (cleanup.ACTOR, "file.upload_expired", str(single.id)), (cleanup.ACTOR, "file.upload_expired", str(parts.id)),
    }  # fmt: skip
    assert await cleanup.expire_abandoned(session, object_store, settings, before) == 0  # nothing twice


async def test_re_signing_part_urls_keeps_a_long_multipart_upload_alive(session, object_store, settings, leiden, draft):
    submitter = member(leiden, Role.submitter)
    parts = await _multipart_with_one_part(session, object_store, settings, submitter, draft.distributions[0].id)
    await _abandon(session, parts)
    await uploads.upload_part_urls(session, object_store, settings, submitter, parts.id, [2])
    before = datetime.now(UTC) - cleanup.STAGING_TTL
    assert await cleanup.expire_abandoned(session, object_store, settings, before) == 0
    assert parts.status is UploadStatus.pending


async def test_orphans_go_and_what_pending_uploads_still_need_stays(session, object_store, settings, leiden, draft):
    """Staging bytes and a multipart upload that no row accounts for (as after a lost transaction)."""
    submitter = member(leiden, Role.submitter)
    live = await _single(session, object_store, settings, submitter, draft.distributions[0].id)
    live_parts = await _multipart_with_one_part(session, object_store, settings, submitter, draft.distributions[1].id)
    bucket = buckets.institution_bucket(settings, leiden.id)
    orphan = buckets.staging_key(uuid.uuid4())
    object_store.put_stream(bucket, orphan, io.BytesIO(DATA), len(DATA))
    object_store.start_multipart(bucket, buckets.staging_key(uuid.uuid4()))
    kept = "files/elsewhere"
    object_store.put_stream(bucket, kept, io.BytesIO(DATA), len(DATA))
    pending = {live.staging_key, live_parts.staging_key}

    assert cleanup.delete_orphans(object_store, settings, datetime.now(UTC) - timedelta(hours=1), pending) == (0, 0)
    assert cleanup.delete_orphans(object_store, settings, datetime.now(UTC) + timedelta(minutes=5), pending) == (1, 1)
    assert _left_behind(object_store, bucket) == (sorted([kept, live.staging_key]), [live_parts.staging_key])


async def _committed_abandoned_upload(settings) -> tuple[uuid.UUID, str]:
    database, store = Database(settings), ObjectStore.from_settings(settings)
    try:
        async with database.unit_of_work() as session:
            leiden = await institution(session, "leiden-scgt")
            version = await draft_dataset(session, leiden, ["cells.csv"])
            submitter = member(leiden, Role.submitter)
            found = await _single(session, store, settings, submitter, version.distributions[0].id)
            await _abandon(session, found)
            return found.id, buckets.institution_bucket(settings, leiden.id)
    finally:
        await database.dispose()


async def _status(settings, upload_id) -> UploadStatus:
    database = Database(settings)
    try:
        async with database.unit_of_work() as session:
            return (await session.get(FileUpload, upload_id)).status
    finally:
        await database.dispose()


def _remove(store: ObjectStore, bucket: str) -> None:
    for item in store.client.list_objects(bucket, recursive=True):
        store.client.remove_object(bucket, item.object_name)
    store.client.remove_bucket(bucket)


async def test_the_command_cleans_committed_uploads_and_the_chain_stays_intact(fresh_settings):
    upload_id, bucket = await _committed_abandoned_upload(fresh_settings)
    store = ObjectStore.from_settings(fresh_settings)
    try:
        command = ["cellcommons", "storage", "clean-staging", "--older-than", "12"]
        env = cli_environment(fresh_settings)
        result = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, timeout=99)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == (
            "1 abandoned uploads expired; deleted 0 orphaned staging objects, 0 orphaned multipart uploads, "
            "0 dataset files no distribution names and 0 export results no job names"
        )
        assert await _status(fresh_settings, upload_id) is UploadStatus.expired
        assert _left_behind(store, bucket) == ([], [])
        assert (await verify_database(fresh_settings)).intact
    finally:
        _remove(store, bucket)


async def test_the_schedulers_companion_cleans_at_once_and_stops_when_told(fresh_settings):
    upload_id, bucket = await _committed_abandoned_upload(fresh_settings)
    database, stop = Database(fresh_settings), asyncio.Event()
    try:
        task = asyncio.create_task(cleanup.keep_clean(database, fresh_settings, stop))
        for _ in range(100):
            if await _status(fresh_settings, upload_id) is UploadStatus.expired:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        assert await _status(fresh_settings, upload_id) is UploadStatus.expired
    finally:
        await database.dispose()
        _remove(ObjectStore.from_settings(fresh_settings), bucket)
