"""GraphQL mutations for dataset files: uploads (single PUT or multipart; complete, abort), download URLs and
manifests.

All of them are mutations, although two only read files: each writes the audit log, and mutations can be neither
sent as GET nor batched into a query's parallel fields. Each commits its own work before answering, so a URL
never leaves unless its audit event is committed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any

import strawberry

from cellcommons.db import committed
from cellcommons.graphql.types import Distribution
from cellcommons.storage import downloads, uploads
from cellcommons.storage.object_store import ObjectStore

UPLOAD = "FileUpload"


@strawberry.type(description="Where to send a file's bytes: a presigned request to object storage.")
class UploadTicket:
    upload_id: strawberry.ID = strawberry.field(description="Pass to completeUpload once the bytes are sent.")
    url: str
    method: str = strawberry.field(description="PUT, with the file as the body and its Content-Length")
    expires_at: datetime


@strawberry.type(description="A presigned PUT for one part of a multipart upload, and the file's bytes it carries.")
class UploadPart:
    part_number: int
    url: str = strawberry.field(description="PUT the part's bytes here; keep the ETag header of the answer.")
    offset: float = strawberry.field(description="Where the part's bytes start in the file.")
    size_bytes: float


@strawberry.type(description="A multipart upload: PUT each part to its URL, then completeUpload with the ETags.")
class MultipartUploadTicket:
    upload_id: strawberry.ID
    part_size_bytes: float
    part_count: int
    parts: list[UploadPart] = strawberry.field(description="The first 1,000 parts; uploadPartUrls for the rest.")
    expires_at: datetime = strawberry.field(description="When these part URLs expire; uploadPartUrls signs anew.")


@strawberry.input(description="A part sent to object storage: its number and the ETag the PUT answered.")
class CompletedPart:
    part_number: int
    etag: str


@strawberry.type(description="A presigned GET for one file; HTTP Range requests work on it.")
class DownloadUrl:
    distribution: Distribution
    url: str
    expires_at: datetime


@strawberry.type(description="Every uploaded file of a dataset version with a URL, size and SHA-256.")
class DownloadManifest:
    dataset_version_id: strawberry.ID
    expires_at: datetime
    files: list[DownloadUrl]


async def _committed(info: strawberry.Info, work: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    """Run a service call in the request's session and commit it; roll back on failure, except that a
    rejected upload is committed first (the rejection is recorded) and then reported."""

    settings = info.context.settings
    unit = partial(committed, keep_on=(uploads.UploadRejected,), **kwargs)
    return await info.context.read(unit, work, ObjectStore.shared(settings), settings, *args)


def _whole_bytes(value: float | None) -> int | None:
    """A byte count sent as a Float (GraphQL's Int stops at 2^31): -1 when not whole, which the service refuses."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else -1


def _parts(ticket_parts: list[uploads.PartUrl]) -> list[UploadPart]:
    return [UploadPart(part_number=p.part_number, url=p.url, offset=p.offset, size_bytes=p.size) for p in ticket_parts]


def _download_url(link: downloads.DownloadLink) -> DownloadUrl:
    return DownloadUrl(distribution=Distribution.of(link.distribution), url=link.url, expires_at=link.expires_at)


@strawberry.type
class FilesMutation:
    @strawberry.mutation(
        description="Start uploading a file of a draft dataset version: declare its SHA-256 and size, then PUT "
        "the bytes to the returned URL (valid 15 minutes, at most 5 GiB) and call completeUpload. Submitters only."
    )
    async def request_upload(
        self, info: strawberry.Info, distribution_id: strawberry.ID, sha256: str, size_bytes: float
    ) -> UploadTicket:
        key = info.context.ids.key_of(distribution_id, "Distribution", "distributionId")
        ticket = await _committed(
            info,
            uploads.request_upload,
            info.context.principal,
            key,
            sha256=sha256,
            size_bytes=_whole_bytes(size_bytes),
        )
        upload_id = info.context.ids.global_id(UPLOAD, ticket.upload_id)
        return UploadTicket(upload_id=upload_id, url=ticket.url, method=ticket.method, expires_at=ticket.expires_at)

    @strawberry.mutation(
        description="Start a multipart upload (any size up to 5 TiB; needed above 5 GiB): declare the file's "
        "SHA-256 and size, optionally the part size (5 MiB to 5 GiB; default 64 MiB or more to fit 10,000 parts), "
        "PUT each part to its URL and call completeUpload with the parts' ETags. Submitters only."
    )
    async def request_multipart_upload(
        self,
        info: strawberry.Info,
        distribution_id: strawberry.ID,
        sha256: str,
        size_bytes: float,
        part_size_bytes: float | None = None,
    ) -> MultipartUploadTicket:
        key = info.context.ids.key_of(distribution_id, "Distribution", "distributionId")
        ticket = await _committed(
            info, uploads.request_multipart_upload, info.context.principal, key, sha256=sha256,
            size_bytes=_whole_bytes(size_bytes), part_size=_whole_bytes(part_size_bytes),
        )  # fmt: skip
        return MultipartUploadTicket(
            upload_id=info.context.ids.global_id(UPLOAD, ticket.upload_id), part_size_bytes=ticket.part_size,
            part_count=ticket.part_count, parts=_parts(ticket.parts), expires_at=ticket.expires_at,
        )  # fmt: skip

    @strawberry.mutation(description="Fresh URLs (15 minutes) for parts of a pending multipart upload, 1,000 at most.")
    async def upload_part_urls(
        self, info: strawberry.Info, upload_id: strawberry.ID, part_numbers: list[int]
    ) -> list[UploadPart]:
        key = info.context.ids.key_of(upload_id, UPLOAD, "uploadId")
        return _parts(await _committed(info, uploads.upload_part_urls, info.context.principal, key, part_numbers))

    @strawberry.mutation(
        description="Verify an uploaded file (SHA-256 and size, streamed once) and record it on its "
        "distribution; a multipart upload is first assembled from `parts` (every part, with its ETag). "
        "A mismatch deletes the bytes and fails with code checksum_mismatch."
    )
    async def complete_upload(
        self, info: strawberry.Info, upload_id: strawberry.ID, parts: list[CompletedPart] | None = None
    ) -> Distribution:
        key = info.context.ids.key_of(upload_id, UPLOAD, "uploadId")
        listed = [(p.part_number, p.etag) for p in parts] if parts is not None else None
        row = await _committed(info, uploads.complete_upload, info.context.principal, key, listed)
        return Distribution.of(row)

    @strawberry.mutation(
        description="Abandon a pending upload: what was sent is deleted and the upload cannot complete. "
        "Returns the upload's id."
    )
    async def abort_upload(self, info: strawberry.Info, upload_id: strawberry.ID) -> strawberry.ID:
        key = info.context.ids.key_of(upload_id, UPLOAD, "uploadId")
        await _committed(info, uploads.abort_upload, info.context.principal, key)
        return upload_id

    @strawberry.mutation(
        description="A presigned GET for one file, valid expiresIn seconds (1-900, default 300). Audited. "
        "Revoked access stops new URLs; one already issued works until it expires."
    )
    async def download_url(
        self, info: strawberry.Info, distribution_id: strawberry.ID, expires_in: int = downloads.DEFAULT_EXPIRY
    ) -> DownloadUrl:
        key = info.context.ids.key_of(distribution_id, "Distribution", "distributionId")
        link = await _committed(info, downloads.issue_download_url, info.context.principal, key, expires_in)
        return _download_url(link)

    @strawberry.mutation(
        description="URLs, sizes and SHA-256 checksums of every uploaded file of a dataset version, for "
        "scripted and resumable downloads. Audited like downloadUrl."
    )
    async def download_manifest(
        self, info: strawberry.Info, dataset_version_id: strawberry.ID, expires_in: int = downloads.DEFAULT_EXPIRY
    ) -> DownloadManifest:
        key = info.context.ids.key_of(dataset_version_id, "DatasetVersion", "datasetVersionId")
        manifest = await _committed(info, downloads.download_manifest, info.context.principal, key, expires_in)
        return DownloadManifest(
            dataset_version_id=dataset_version_id,
            expires_at=manifest.expires_at,
            files=[_download_url(link) for link in manifest.files],
        )
