"""Uploads by submitters: a presigned PUT into a staging key, then a completion that verifies and moves it.

`request_upload` records what the submitter declares (SHA-256, size) and hands out a presigned PUT for a staging
key. `complete_upload` streams the staged object once to hash it, and only when both checksum and size match
copies exactly the version it hashed (ETag precondition) to the file's own key and records size and checksum
on the distribution. A mismatch deletes the staged bytes and marks the upload rejected: nothing is left behind.
Only submitters of the owning institution upload, and only into draft versions (published ones are immutable).
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
from cellcommons.storage import buckets, repository
from cellcommons.storage.models import FileUpload, UploadStatus
from cellcommons.storage.object_store import ObjectStore

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


def _declared(sha256: str, size_bytes: int) -> tuple[str, int]:
    checksum = sha256.strip().lower() if isinstance(sha256, str) else ""
    if not SHA256.fullmatch(checksum):
        raise InvalidInput("must be the file's SHA-256 as 64 hexadecimal characters", field="sha256")
    if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or not 0 <= size_bytes <= MAX_UPLOAD_BYTES:
        raise InvalidInput(f"must be a whole number of bytes from 0 to {MAX_UPLOAD_BYTES} (5 GiB)", field="sizeBytes")
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
    checksum, size = _declared(sha256, size_bytes)
    view = await _editable(session, settings, principal, distribution_id)
    bucket = buckets.institution_bucket(settings, view.custodian_id)
    await asyncio.to_thread(store.ensure_bucket, bucket)
    upload_id = uuid.uuid4()
    expires_at = datetime.now(UTC) + UPLOAD_URL_LIFETIME
    upload = FileUpload(
        id=upload_id,
        distribution_id=distribution_id,
        institution_id=view.custodian_id,
        requested_by=principal.actor,
        declared_sha256=checksum,
        declared_size=size,
        staging_key=buckets.staging_key(upload_id),
        status=UploadStatus.pending,
        url_expires_at=expires_at,
    )
    session.add(upload)
    await session.flush()
    await _audit(session, principal, "file.upload_requested", view, upload, sha256=checksum, size=size)
    url = store.presign_put(bucket, upload.staging_key, UPLOAD_URL_LIFETIME)
    return UploadTicket(upload_id=upload_id, url=url, method="PUT", expires_at=expires_at)


async def complete_upload(
    session: AsyncSession, store: ObjectStore, settings: Settings, principal: Principal | None, upload_id: uuid.UUID
) -> Distribution:
    upload = await repository.own_upload_for_update(session, principal, upload_id) if principal else None
    if upload is None:
        raise _no_upload()
    view = await _editable(session, settings, principal, upload.distribution_id)
    if upload.status is not UploadStatus.pending:
        raise Conflict(f"this upload is already {upload.status.value}; request a new one", field="uploadId")
    bucket = buckets.institution_bucket(settings, view.custodian_id)
    try:
        found = await asyncio.to_thread(store.sha256, bucket, upload.staging_key)
    except NotFound:
        raise Conflict("nothing has been uploaded to this upload's URL yet", field="uploadId") from None
    if (found.sha256, found.size) != (upload.declared_sha256, upload.declared_size):
        await _reject(session, store, principal, view, upload, bucket, found)
    distribution = view.distribution
    key = buckets.file_key(distribution.dataset_version_id, distribution.id, upload.id)
    target = (bucket, key)
    await asyncio.to_thread(
        store.copy, (bucket, upload.staging_key), target, etag=found.etag, content_type=distribution.media_type
    )
    await asyncio.to_thread(store.delete, bucket, upload.staging_key)
    distribution.size_bytes, distribution.sha256, distribution.storage_key = found.size, found.sha256, key
    _finish(upload, UploadStatus.completed)
    await session.flush()
    await _audit(session, principal, "file.upload_completed", view, upload, sha256=found.sha256, size=found.size)
    return distribution


async def _reject(session, store, principal, view, upload, bucket, found) -> None:
    await asyncio.to_thread(store.delete, bucket, upload.staging_key)
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
