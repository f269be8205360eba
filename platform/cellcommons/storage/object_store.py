"""Object storage (S3 / MinIO) behind a small interface, through the `minio` SDK.

The SDK is synchronous; async callers run these methods with `asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO

from minio import Minio
from minio.error import S3Error
from urllib3.exceptions import HTTPError

from cellcommons.errors import InvalidInput, NotFound, Unavailable
from cellcommons.settings import Settings

# S3 signature V4 allows at most seven days; the platform's own limits (≤ 15 min downloads) sit below.
MAX_PRESIGN_EXPIRY = timedelta(days=7)
PART_SIZE = 16 * 1024 * 1024
CHUNK_SIZE = 1024 * 1024
_MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchObject"}


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
        if not settings.s3_endpoint:
            raise InvalidInput("object storage endpoint is not configured", field="CELLCOMMONS_S3_ENDPOINT")
        return cls(
            Minio(
                settings.s3_endpoint,
                access_key=settings.s3_access_key,
                secret_key=settings.s3_secret_key.get_secret_value(),
                secure=settings.s3_secure,
                region=settings.s3_region,
            )
        )

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

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.stat(bucket, key)
        except NotFound:
            return False
        return True

    def delete(self, bucket: str, key: str) -> None:
        with _translated(bucket, key):
            self.client.remove_object(bucket, key)

    def presign_get(self, bucket: str, key: str, expires: timedelta) -> str:
        with _translated(bucket, key):
            return self.client.presigned_get_object(bucket, key, expires=_checked(expires))

    def presign_put(self, bucket: str, key: str, expires: timedelta) -> str:
        with _translated(bucket, key):
            return self.client.presigned_put_object(bucket, key, expires=_checked(expires))


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
            raise Unavailable(f"object storage refused {self.where}: {exc.code}") from None
        if isinstance(exc, HTTPError | OSError):
            raise Unavailable(f"object storage unreachable for {self.where}: {exc}") from None
        return False
