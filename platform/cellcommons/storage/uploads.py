"""Uploads by submitters: a presigned PUT into a staging key, then a completion that verifies and moves it.

`request_upload` records what the submitter declares (SHA-256, size) and hands out a presigned PUT for a staging
key. `complete_upload` streams the staged object once to hash it, and only when both checksum and size match
copies exactly the version it hashed (ETag precondition) to the file's own key and records size and checksum
on the distribution. A mismatch deletes the staged bytes and marks the upload rejected: nothing is left behind.
A completion whose transaction was lost after the move is simply completed again: the file's key is the upload's.
Only submitters of the owning institution upload, and only into draft versions (published ones are immutable).

Files above 5 GiB (or any file, if the submitter prefers) go as a multipart upload into the same staging key:
`request_multipart_upload` starts it and hands out a presigned PUT per part (`upload_part_urls` re-signs parts
whose URLs expired), and `complete_upload` with the parts' ETags assembles the object before the same
verification. `abort_upload` abandons an upload and deletes what was sent; uploads never completed are expired
by the staging cleanup (`storage.cleanup`) a day after their last URL expired.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.access.policy import Action, require
from cellcommons.access.visibility import describe
from cellcommons.audit.service import append
from cellcommons.auth.principal import Principal
from cellcommons.catalogue.enums import VersionStatus
from cellcommons.catalogue.models import Distribution
from cellcommons.errors import Conflict, InvalidInput, NotFound
from cellcommons.settings import Settings
from cellcommons.storage import buckets, multipart, repository
from cellcommons.storage.models import FileUpload, UploadStatus
from cellcommons.storage.object_store import Digest, ObjectStore

# One presigned PUT carries at most 5 GiB (S3's single-request limit).
MAX_UPLOAD_BYTES = 5 * 1024**3
UPLOAD_URL_LIFETIME = timedelta(minutes=15)
SHA256 = re.compile(r"[0-9a-f]{64}")


class UploadRejected(InvalidInput):
    """The uploaded bytes are not what was declared. The rejection is recorded (the upload is marked and
    audited), so the edge commits before passing this error on."""

    code = "checksum_mismatch"


@dataclass(frozen=True)
class UploadTicket:
    upload_id: uuid.UUID
    url: str
    method: str
    expires_at: datetime


def _no_upload() -> NotFound:
    return NotFound("no upload with this id", field="uploadId")


@dataclass(frozen=True)
class PartUrl:
    part_number: int
    url: str
    offset: int  # where the part's bytes start in the file
    size: int


@dataclass(frozen=True)
class MultipartTicket:
    upload_id: uuid.UUID
    part_size: int
    part_count: int
    parts: list[PartUrl]  # the first parts' URLs (all of them up to 1,000); `upload_part_urls` for the rest
    expires_at: datetime


def _declared(sha256: str, size_bytes: int, smallest: int, largest: int, unit: str) -> tuple[str, int]:
    checksum = sha256.strip().lower() if isinstance(sha256, str) else ""
    if not SHA256.fullmatch(checksum):
        raise InvalidInput("must be the file's SHA-256 as 64 hexadecimal characters", field="sha256")
    if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or not smallest <= size_bytes <= largest:
        raise InvalidInput(f"must be a whole number of bytes from {smallest} to {largest} ({unit})", field="sizeBytes")
    return checksum, size_bytes


async def _editable(
    session: AsyncSession, settings: Settings, principal: Principal | None, distribution_id: uuid.UUID
) -> repository.FileView:
    """The distribution, if the principal may change its draft version's files (NotFound when hidden)."""
    view = await repository.file_view(session, principal, distribution_id)
    if view is None:
        raise NotFound("no distribution with this id", field="distributionId")
    require(principal, Action.update, await describe(session, view.version, node_id=settings.node_id))
    if view.version.status is not VersionStatus.draft:
        raise Conflict(
            "the dataset version is published and its files cannot change; upload into a new draft",
            field="distributionId",
        )
    return view


async def _open(
    session: AsyncSession,
    store: ObjectStore,
    settings: Settings,
    principal: Principal | None,
    distribution_id: uuid.UUID,
    checksum: str,
    size: int,
    part_size: int | None = None,
) -> tuple[FileUpload, str]:
    """Record and audit a new upload of the distribution (a multipart one when `part_size` is given); its bucket."""
    view = await _editable(session, settings, principal, distribution_id)
    bucket = buckets.institution_bucket(settings, view.custodian_id)
    await asyncio.to_thread(store.ensure_bucket, bucket)
    upload_id = uuid.uuid4()
    upload = FileUpload(
        id=upload_id, distribution_id=distribution_id, institution_id=view.custodian_id,
        requested_by=principal.actor, declared_sha256=checksum, declared_size=size,
        staging_key=buckets.staging_key(upload_id), status=UploadStatus.pending,
        url_expires_at=datetime.now(UTC) + UPLOAD_URL_LIFETIME, part_size=part_size,
    )  # fmt: skip
    extra = {}
    if part_size is not None:
        upload.multipart_id = await asyncio.to_thread(store.start_multipart, bucket, upload.staging_key)
        extra["part_size"] = part_size
    try:
        session.add(upload)
        await session.flush()
        await _audit(session, principal, "file.upload_requested", view, upload, sha256=checksum, size=size, **extra)
    except BaseException:
        if upload.multipart_id is not None:  # no multipart upload without its row
            await asyncio.to_thread(store.abort_multipart, bucket, upload.staging_key, upload.multipart_id)
        raise
    return upload, bucket


async def request_upload(
    session: AsyncSession,
    store: ObjectStore,
    settings: Settings,
    principal: Principal | None,
    distribution_id: uuid.UUID,
    *,
    sha256: str,
    size_bytes: int,
) -> UploadTicket:
    checksum, size = _declared(sha256, size_bytes, 0, MAX_UPLOAD_BYTES, "5 GiB; larger files go in parts")
    upload, bucket = await _open(session, store, settings, principal, distribution_id, checksum, size)
    url = store.presign_put(bucket, upload.staging_key, UPLOAD_URL_LIFETIME)
    return UploadTicket(upload_id=upload.id, url=url, method="PUT", expires_at=upload.url_expires_at)


async def request_multipart_upload(
    session: AsyncSession,
    store: ObjectStore,
    settings: Settings,
    principal: Principal | None,
    distribution_id: uuid.UUID,
    *,
    sha256: str,
    size_bytes: int,
    part_size: int | None = None,
) -> MultipartTicket:
    checksum, size = _declared(sha256, size_bytes, 1, multipart.MAX_OBJECT_BYTES, "5 TiB")
    chosen = multipart.part_size_for(size, part_size)
    upload, bucket = await _open(session, store, settings, principal, distribution_id, checksum, size, chosen)
    count = multipart.part_count(size, chosen)
    first = range(1, min(count, multipart.MAX_PARTS_PER_REQUEST) + 1)
    return MultipartTicket(
        upload_id=upload.id, part_size=chosen, part_count=count, parts=_part_urls(store, bucket, upload, first),
        expires_at=upload.url_expires_at,
    )  # fmt: skip


async def upload_part_urls(
    session: AsyncSession,
    store: ObjectStore,
    settings: Settings,
    principal: Principal | None,
    upload_id: uuid.UUID,
    part_numbers: list[int],
) -> list[PartUrl]:
    """Fresh URLs for parts of a pending multipart upload (those handed out live 15 minutes)."""
    upload, view = await _pending(session, settings, principal, upload_id)
    if upload.multipart_id is None:
        raise InvalidInput("this upload is a single PUT, not a multipart upload", field="uploadId")
    bucket = buckets.institution_bucket(settings, view.custodian_id)
    urls = _part_urls(store, bucket, upload, part_numbers)
    upload.url_expires_at = datetime.now(UTC) + UPLOAD_URL_LIFETIME  # still alive: the staging cleanup waits
    await session.flush()
    return urls


def _part_urls(store: ObjectStore, bucket: str, upload: FileUpload, numbers) -> list[PartUrl]:
    return [
        PartUrl(part.number, store.presign_part(bucket, upload.staging_key, upload.multipart_id, part.number,
                                                UPLOAD_URL_LIFETIME), part.offset, part.size)
        for part in multipart.parts(upload.declared_size, upload.part_size, numbers)
    ]  # fmt: skip


async def _pending(
    session: AsyncSession, settings: Settings, principal: Principal | None, upload_id: uuid.UUID
) -> tuple[FileUpload, repository.FileView]:
    """The principal's institution's upload, locked, if it may still change the file and the upload is pending."""
    upload = await repository.own_upload_for_update(session, principal, upload_id) if principal else None
    if upload is None:
        raise _no_upload()
    view = await _editable(session, settings, principal, upload.distribution_id)
    if upload.status is not UploadStatus.pending:
        raise Conflict(f"this upload is already {upload.status.value}; request a new one", field="uploadId")
    return upload, view


async def complete_upload(
    session: AsyncSession,
    store: ObjectStore,
    settings: Settings,
    principal: Principal | None,
    upload_id: uuid.UUID,
    parts: list[tuple[int, str]] | None = None,
) -> Distribution:
    """Verify the upload and move it into place; a multipart upload is first assembled from `parts`
    (part number, ETag)."""
    upload, view = await _pending(session, settings, principal, upload_id)
    if upload.multipart_id is None and parts:
        raise InvalidInput("only a multipart upload is completed with parts", field="parts")
    bucket = buckets.institution_bucket(settings, view.custodian_id)
    distribution = view.distribution
    key = buckets.file_key(distribution.dataset_version_id, distribution.id, upload.id)
    # The file's key is the upload's own: if it exists, an earlier completion moved the verified file there
    # (deleting the staged bytes) and lost its transaction afterwards. Verify it in place instead.
    moved = await asyncio.to_thread(store.exists, bucket, key)
    if not moved and upload.multipart_id is not None:
        await _assemble(store, bucket, upload, parts)
    source = key if moved else upload.staging_key
    found = await _digest(store, bucket, source)
    if (found.sha256, found.size) != (upload.declared_sha256, upload.declared_size):
        await _reject(session, store, principal, view, upload, (bucket, source), found)
    if not moved:
        await _copied(store, (bucket, upload.staging_key), (bucket, key), found.etag, distribution.media_type)
    await asyncio.to_thread(store.delete, bucket, upload.staging_key)  # no error when already gone
    distribution.size_bytes, distribution.sha256, distribution.storage_key = found.size, found.sha256, key
    _finish(upload, UploadStatus.completed)
    await session.flush()
    await _audit(session, principal, "file.upload_completed", view, upload, sha256=found.sha256, size=found.size)
    return distribution


def _changed() -> Conflict:
    # Object storage's own error names the bucket and key, which never leave the platform.
    return Conflict(
        "the uploaded file changed while it was being verified; complete the upload again", field="uploadId"
    )


async def _digest(store: ObjectStore, bucket: str, key: str) -> Digest:
    """SHA-256, size and ETag of what was uploaded, read once."""
    try:
        return await asyncio.to_thread(store.sha256, bucket, key)
    except NotFound:
        raise Conflict("nothing has been uploaded to this upload's URL yet", field="uploadId") from None
    except Conflict:
        raise _changed() from None


async def _copied(store: ObjectStore, source: tuple[str, str], target: tuple[str, str], etag: str, media_type) -> None:
    """Copy exactly the version that was verified (ETag precondition)."""
    try:
        await asyncio.to_thread(store.copy, source, target, etag=etag, content_type=media_type)
    except (Conflict, NotFound):
        raise _changed() from None


async def _assemble(store: ObjectStore, bucket: str, upload: FileUpload, parts: list[tuple[int, str]] | None) -> None:
    """Complete the multipart upload into the staging key, unless an earlier completion did and its
    transaction was lost afterwards (S3 forgets the upload id once it assembled the object)."""
    listed = multipart.completed_parts(parts, multipart.part_count(upload.declared_size, upload.part_size))
    if await asyncio.to_thread(store.exists, bucket, upload.staging_key):
        return
    try:
        await asyncio.to_thread(store.complete_multipart, bucket, upload.staging_key, upload.multipart_id, listed)
    except NotFound:  # its parts are gone: the error names the key, which stays inside
        raise Conflict("this multipart upload no longer exists in object storage; request a new one",
                       field="uploadId") from None  # fmt: skip


async def abort_upload(
    session: AsyncSession, store: ObjectStore, settings: Settings, principal: Principal | None, upload_id: uuid.UUID
) -> FileUpload:
    """Abandon a pending upload: what was sent is deleted (a multipart upload's parts with it)."""
    upload, view = await _pending(session, settings, principal, upload_id)
    await asyncio.to_thread(discard_staged, store, buckets.institution_bucket(settings, view.custodian_id), upload)
    _finish(upload, UploadStatus.aborted)
    await session.flush()
    await _audit(session, principal, "file.upload_aborted", view, upload)
    return upload


def discard_staged(store: ObjectStore, bucket: str, upload: FileUpload) -> None:
    """Delete whatever the upload left in staging; harmless when nothing was sent."""
    if upload.multipart_id is not None:
        store.abort_multipart(bucket, upload.staging_key, upload.multipart_id)
    store.delete(bucket, upload.staging_key)


async def _reject(session, store, principal, view, upload, stored: tuple[str, str], found) -> None:
    await asyncio.to_thread(store.delete, *stored)
    _finish(upload, UploadStatus.rejected)
    await session.flush()
    details = dict(declared_sha256=upload.declared_sha256, declared_size=upload.declared_size)
    await _audit(session, principal, "file.upload_rejected", view, upload, sha256=found.sha256, size=found.size,
                 **details)  # fmt: skip
    field, what = ("sizeBytes", "size") if found.size != upload.declared_size else ("sha256", "SHA-256")
    raise UploadRejected(
        f"the uploaded file's {what} does not match the declared one (got {found.size} bytes, SHA-256 "
        f"{found.sha256}); it was deleted: request a new upload",
        field=field,
    )


def _finish(upload: FileUpload, status: UploadStatus) -> None:
    upload.status = status
    upload.finished_at = datetime.now(UTC)


async def _audit(session, principal, action, view, upload, **details) -> None:
    await append(
        session,
        actor=principal.actor,
        institution=view.custodian_slug,
        action=action,
        target=f"distribution:{view.distribution.id}",
        details={"upload": str(upload.id), "file_name": view.distribution.file_name, **details},
    )
