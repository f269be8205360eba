"""Cleaning object storage: uploads never completed leave bytes behind, replaced files and dead export attempts
leave objects no record names, and this takes them away.

An upload is abandoned when it is still pending a day (the TTL) after its last URL expired (URLs live 15
minutes; re-signing a multipart upload's part URLs keeps it alive, so a long upload is never cut off). The
cleanup deletes what it staged (aborting a multipart upload with its parts), marks it `expired` and audits
that, in batches, each its own transaction. Then it deletes what no pending upload accounts for (a distribution
deleted with its uploads, a transaction lost after object storage was written): staging objects and unfinished
multipart uploads older than the TTL in every institution bucket.

Last, it deletes the dataset files and export results older than the TTL that no record names: a file replaced
on a draft or left by a discarded draft (a distribution names only its latest upload's key), and an export
attempt whose worker died between its upload and its commit (the next attempt writes a key of its own). The
records decide, looked up a page of keys per statement: a file stays while a distribution of any version names
it or its upload is still pending (a completion that lost its transaction is repeated on the file at its key);
an export result stays while its job names it, whatever the job's status or agreement (the end of an agreement
is for its terms to settle, not for this sweep), and so does every attempt of a job still queued or running.
Keys embed the upload or job that writes them, and a finished upload or job never writes or records a key again:
once no record names a key, none ever will, so deleting it after the look-up is safe. The TTL is a margin on
top (object storage's clock against the database's). Keys of a shape the platform never writes are left alone.

S3 deletions are idempotent, so a batch whose commit fails is simply done again by the next run. It runs in the
scheduler process every hour (`sync.console.run_scheduler`) and as `cellcommons storage clean-staging`;
several at once are safe (locked rows are skipped, deletions repeat harmlessly).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.audit.service import append
from cellcommons.background import periodically
from cellcommons.db import Database, with_database
from cellcommons.settings import Settings
from cellcommons.storage import buckets, repository, uploads
from cellcommons.storage.models import UploadStatus
from cellcommons.storage.object_store import ObjectStore

STAGING_TTL = timedelta(hours=24)
EVERY = timedelta(hours=1)  # how often the scheduler cleans
BATCH = 100
ACTOR = "system:staging-cleanup"
STAGING = buckets.staging_key("")  # the prefix every staging key shares
PAGE = 1000  # keys looked up in one statement (and deleted in one go)


@dataclass
class Cleaned:
    expired_uploads: int = 0
    orphaned_objects: int = 0
    orphaned_multipart: int = 0
    unreferenced_files: int = 0
    unreferenced_exports: int = 0

    def summary(self) -> str:
        return (
            f"{self.expired_uploads} abandoned uploads expired; deleted {self.orphaned_objects} orphaned staging "
            f"objects, {self.orphaned_multipart} orphaned multipart uploads, {self.unreferenced_files} dataset files "
            f"no distribution names and {self.unreferenced_exports} export results no job names"
        )


async def clean_storage(
    database: Database, store: ObjectStore, settings: Settings, *, ttl: timedelta = STAGING_TTL
) -> Cleaned:
    before = datetime.now(UTC) - ttl
    cleaned = Cleaned()
    while True:
        async with database.unit_of_work() as session:
            expired = await expire_abandoned(session, store, settings, before)
        cleaned.expired_uploads += expired
        if expired < BATCH:
            break
    async with database.unit_of_work() as session:
        pending = await repository.pending_staging_keys(session)
    cleaned.orphaned_objects, cleaned.orphaned_multipart = await asyncio.to_thread(
        delete_orphans, store, settings, before, pending
    )
    for bucket in await asyncio.to_thread(store.bucket_names, buckets.institution_bucket_prefix(settings)):
        cleaned.unreferenced_files += await delete_unnamed(
            database, store, bucket, buckets.FILES, buckets.FILE_KEY, before, repository.named_files
        )
    exports = buckets.exports_bucket(settings)
    if exports in await asyncio.to_thread(store.bucket_names, exports):
        cleaned.unreferenced_exports = await delete_unnamed(
            database, store, exports, "", buckets.EXPORT_KEY, before, repository.named_exports
        )
    return cleaned


async def expire_abandoned(session: AsyncSession, store: ObjectStore, settings: Settings, before: datetime) -> int:
    """One batch: delete what pending uploads whose last URL expired before `before` staged; mark and audit
    them expired."""
    found = await repository.abandoned_uploads(session, before, BATCH)
    for upload, institution_slug in found:
        bucket = buckets.institution_bucket(settings, upload.institution_id)
        await asyncio.to_thread(uploads.discard_staged, store, bucket, upload)
        upload.status, upload.finished_at = UploadStatus.expired, datetime.now(UTC)
        await session.flush()
        await append(
            session,
            actor=ACTOR,
            institution=institution_slug,
            action="file.upload_expired",
            target=f"distribution:{upload.distribution_id}",
            details={"upload": str(upload.id), "requested_by": upload.requested_by,
                     "multipart": upload.multipart_id is not None},
        )  # fmt: skip
    return len(found)


def delete_orphans(store: ObjectStore, settings: Settings, before: datetime, pending: set[str]) -> tuple[int, int]:
    """Staging objects and unfinished multipart uploads older than `before` in the institutions' buckets, except
    those of `pending` uploads (staging keys)."""
    objects = multiparts = 0
    for bucket in store.bucket_names(buckets.institution_bucket_prefix(settings)):
        for key, upload_id in store.multipart_older_than(bucket, STAGING, before):
            if key not in pending:
                store.abort_multipart(bucket, key, upload_id)
                multiparts += 1
        for key in store.keys_older_than(bucket, STAGING, before):
            if key not in pending:
                store.delete(bucket, key)
                objects += 1
    return objects, multiparts


async def delete_unnamed(
    database: Database,
    store: ObjectStore,
    bucket: str,
    prefix: str,
    shape: re.Pattern[str],
    before: datetime,
    named: Callable[[AsyncSession, list[tuple]], Awaitable[set[str]]],
) -> int:
    """Delete the keys under `prefix` of the platform's `shape` (its groups: the ids of the records that may name
    them) last written before `before` that `named` does not keep, a page of keys at a time. Pages are taken from
    the listing as it goes (on a thread: listing blocks), so only a page is held."""
    listed = store.keys_older_than(bucket, prefix, before)
    deleted = 0
    while page := await asyncio.to_thread(lambda: list(itertools.islice(listed, PAGE))):
        ours = [(key, *map(uuid.UUID, found.groups())) for key in page if (found := shape.fullmatch(key))]
        async with database.unit_of_work() as session:
            kept = await named(session, ours)
        unnamed = [key for key, *_ in ours if key not in kept]
        await asyncio.to_thread(_delete, store, bucket, unnamed)
        deleted += len(unnamed)
    return deleted


def _delete(store: ObjectStore, bucket: str, keys: list[str]) -> None:
    for key in keys:
        store.delete(bucket, key)


def clean_storage_now(settings: Settings, ttl: timedelta = STAGING_TTL) -> Cleaned:
    """One cleanup from a command line."""

    store = ObjectStore.from_settings(settings)
    return with_database(settings, lambda database: clean_storage(database, store, settings, ttl=ttl))


async def keep_clean(database: Database, settings: Settings, stop: asyncio.Event, every: timedelta = EVERY) -> None:
    """Clean object storage now and then every `every` until `stop` is set (a scheduler duty)."""

    async def clean() -> str:
        return (await clean_storage(database, ObjectStore.shared(settings), settings)).summary()

    await periodically(clean, every, stop, "storage cleanup")
