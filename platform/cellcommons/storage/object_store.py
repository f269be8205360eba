"""Object storage (S3 / MinIO) behind a small interface, through the `minio` SDK.

The SDK is synchronous; async callers run these methods with `asyncio.to_thread`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO
from urllib.parse import quote

from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.error import S3Error
from urllib3.exceptions import HTTPError

from cellcommons.errors import Conflict, InvalidInput, NotFound, Unavailable
from cellcommons.settings import Settings

# S3 signature V4 allows at most seven days; the platform's own limits (≤ 15 min downloads) sit below.
MAX_PRESIGN_EXPIRY = timedelta(days=7)
PART_SIZE = 16 * 1024 * 1024
CHUNK_SIZE = 1024 * 1024
_MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchObject"}


@dataclass(frozen=True)
class Digest:
    """What streaming an object once found: its SHA-256, size and the ETag of the version that was read."""

    sha256: str
    size: int
    etag: str


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str
    content_type: str | None
    last_modified: datetime | None


class ObjectStore:
    def __init__(self, client: Minio):
        self.client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectStore:
        return cls(_client(*_connection(settings)))

    @staticmethod
    def shared(settings: Settings) -> ObjectStore:
        """One store (and connection pool) per configured server in this process, for request handlers."""
        return _shared(*_connection(settings))

    def ensure_bucket(self, bucket: str) -> None:
        with _translated(bucket):
            if not self.client.bucket_exists(bucket):
                try:
                    self.client.make_bucket(bucket)
                except S3Error as exc:
                    # Another process created it between our check and our request.
                    if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                        raise

    def put_stream(
        self,
        bucket: str,
        key: str,
        stream: BinaryIO,
        length: int = -1,
        content_type: str = "application/octet-stream",
    ) -> ObjectInfo:
        """Upload from a file-like object; an unknown length (-1) streams as a multipart upload."""
        with _translated(bucket, key):
            self.client.put_object(
                bucket,
                key,
                stream,
                length,
                content_type=content_type,
                part_size=PART_SIZE if length < 0 else 0,
            )
        return self.stat(bucket, key)

    def get_stream(self, bucket: str, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the object's bytes in chunks; memory stays at one chunk whatever the object's size."""
        with _translated(bucket, key):
            response = self.client.get_object(bucket, key)
        try:
            yield from response.stream(chunk_size)
        finally:
            response.close()
            response.release_conn()

    def stat(self, bucket: str, key: str) -> ObjectInfo:
        with _translated(bucket, key):
            found = self.client.stat_object(bucket, key)
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=found.size or 0,
            etag=found.etag or "",
            content_type=found.content_type,
            last_modified=found.last_modified,
        )

    def sha256(self, bucket: str, key: str, chunk_size: int = CHUNK_SIZE) -> Digest:
        """Stream the object once and hash it; memory stays at one chunk. The GET is pinned to the version
        `stat` saw (If-Match), so the digest belongs to that ETag even if the key is overwritten meanwhile."""
        etag = self.stat(bucket, key).etag
        digest, size = hashlib.sha256(), 0
        with _translated(bucket, key):
            response = self.client.get_object(bucket, key, request_headers={"If-Match": etag})
            try:
                for chunk in response.stream(chunk_size):
                    digest.update(chunk)
                    size += len(chunk)
            finally:
                response.close()
                response.release_conn()
        return Digest(sha256=digest.hexdigest(), size=size, etag=etag)

    def copy(self, source: tuple[str, str], target: tuple[str, str], *, etag: str, content_type: str) -> None:
        """Server-side copy of exactly the version with `etag` (Conflict if the source changed since)."""
        with _translated(*source):
            self.client.copy_object(
                *target,
                CopySource(*source, match_etag=etag),
                metadata={"Content-Type": content_type},
                metadata_directive=REPLACE,
            )

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.stat(bucket, key)
        except NotFound:
            return False
        return True

    def delete(self, bucket: str, key: str) -> None:
        with _translated(bucket, key):
            self.client.remove_object(bucket, key)

    def presign_get(self, bucket: str, key: str, expires: timedelta, *, file_name: str | None = None) -> str:
        """A signed GET for exactly this object; with `file_name`, the response names the download."""
        headers = {"response-content-disposition": _attachment(file_name)} if file_name else None
        with _translated(bucket, key):
            return self.client.presigned_get_object(bucket, key, expires=_checked(expires), response_headers=headers)

    def presign_put(self, bucket: str, key: str, expires: timedelta) -> str:
        with _translated(bucket, key):
            return self.client.presigned_put_object(bucket, key, expires=_checked(expires))


def _connection(settings: Settings) -> tuple[str, str, str, bool, str]:
    if not settings.s3_endpoint:
        raise InvalidInput("object storage endpoint is not configured", field="CELLCOMMONS_S3_ENDPOINT")
    secret = settings.s3_secret_key.get_secret_value()
    return settings.s3_endpoint, settings.s3_access_key, secret, settings.s3_secure, settings.s3_region


def _client(endpoint: str, access_key: str, secret_key: str, secure: bool, region: str) -> Minio:
    # A known region makes presigning a local computation (no bucket-location request).
    return Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region)


@functools.cache
def _shared(*connection: object) -> ObjectStore:
    return ObjectStore(_client(*connection))


def _attachment(file_name: str) -> str:
    """RFC 6266 Content-Disposition: an ASCII fallback and the exact name in RFC 5987 form."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in file_name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name, safe='')}"


def _checked(expires: timedelta) -> timedelta:
    if not timedelta(seconds=1) <= expires <= MAX_PRESIGN_EXPIRY:
        raise InvalidInput("must be between 1 second and 7 days", field="expires")
    return expires


class _translated:
    """Turns SDK and transport errors into domain errors that name the object."""

    def __init__(self, bucket: str, key: str | None = None):
        self.where = f"{bucket}/{key}" if key else bucket

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            return False
        if isinstance(exc, S3Error):
            if exc.code in _MISSING:
                raise NotFound(f"no object {self.where}") from None
            if exc.code == "PreconditionFailed":
                raise Conflict(f"object {self.where} changed while it was being read") from None
            raise Unavailable(f"object storage refused {self.where}: {exc.code}") from None
        if isinstance(exc, HTTPError | OSError):
            raise Unavailable(f"object storage unreachable for {self.where}: {exc}") from None
        return False
