"""Object storage (S3 / MinIO) behind a small interface, through the `minio` SDK.

The SDK is synchronous; async callers run these methods with `asyncio.to_thread`. Its multipart calls are
private, so multipart uploads are driven by requests the SDK presigns (`get_presigned_url` with the S3 query
parameters): the same signature the clients' part URLs carry, sent from here for initiate, complete and abort.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO
from urllib.parse import quote
from xml.etree import ElementTree

import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.error import S3Error
from urllib3.exceptions import HTTPError

from cellcommons.errors import CellCommonsError, Conflict, InvalidInput, NotFound, Unavailable
from cellcommons.outages import OBJECT_STORAGE_DOWN
from cellcommons.settings import Settings

log = logging.getLogger(__name__)

# S3 signature V4 allows at most seven days; the platform's own limits (≤ 15 min downloads) sit below.
MAX_PRESIGN_EXPIRY = timedelta(days=7)
PART_SIZE = 16 * 1024 * 1024
CHUNK_SIZE = 1024 * 1024
_MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchObject", "NoSuchUpload"}
# What S3 answers to a completion whose parts are not the ones uploaded.
_REFUSED_PARTS = {"InvalidPart", "InvalidPartOrder", "EntityTooSmall"}
_S3_XML = "http://s3.amazonaws.com/doc/2006-03-01/"
# Requests this module signs and sends itself: short-lived, since they are sent at once.
_OWN_REQUEST_EXPIRY = timedelta(minutes=1)


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
        self._http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=10, read=300), retries=False)

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
        part_size: int = PART_SIZE,
    ) -> ObjectInfo:
        """Upload from a file-like object; an unknown length (-1) streams as a multipart upload in parts of
        `part_size` bytes (S3: at least 5 MiB, at most 10 000 parts)."""
        with _translated(bucket, key):
            self.client.put_object(
                bucket,
                key,
                stream,
                length,
                content_type=content_type,
                part_size=part_size if length < 0 else 0,
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

    def tail(self, bucket: str, key: str, length: int) -> tuple[int, bytes]:
        """The object's size and its last `length` bytes (all of it when smaller), in one range request."""
        with _translated(bucket, key):
            response = self.client.get_object(bucket, key, request_headers={"Range": f"bytes=-{length}"})
        try:
            tail = response.read()
            total = (response.headers.get("Content-Range") or "").rpartition("/")[2]
        finally:
            response.close()
            response.release_conn()
        return (int(total) if total.isdigit() else len(tail)), tail

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

    def start_multipart(self, bucket: str, key: str) -> str:
        """CreateMultipartUpload; returns the S3 UploadId."""
        body = self._signed("POST", bucket, key, {"uploads": ""})
        return ElementTree.fromstring(body).findtext(f"{{{_S3_XML}}}UploadId") or ""

    def presign_part(self, bucket: str, key: str, upload_id: str, part_number: int, expires: timedelta) -> str:
        """A signed UploadPart: PUT the part's bytes; the response's ETag header names the part at completion."""
        query = {"partNumber": str(part_number), "uploadId": upload_id}
        with _translated(bucket, key):
            return self.client.get_presigned_url("PUT", bucket, key, _checked(expires), extra_query_params=query)

    def complete_multipart(self, bucket: str, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        """CompleteMultipartUpload with the parts' numbers and ETags, in order."""
        document = ElementTree.Element("CompleteMultipartUpload", xmlns=_S3_XML)
        for number, etag in parts:
            part = ElementTree.SubElement(document, "Part")
            ElementTree.SubElement(part, "PartNumber").text = str(number)
            ElementTree.SubElement(part, "ETag").text = f'"{etag.strip(chr(34))}"'
        body = self._signed("POST", bucket, key, {"uploadId": upload_id}, ElementTree.tostring(document))
        # S3 may answer 200 with an error document when the assembly fails after it began.
        if ElementTree.fromstring(body).tag.endswith("Error"):
            self._refused(bucket, key, body)

    def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        """AbortMultipartUpload: the parts go; an upload already gone is no error."""
        try:
            self._signed("DELETE", bucket, key, {"uploadId": upload_id})
        except NotFound:
            pass

    def bucket_names(self, prefix: str) -> list[str]:
        with _translated(prefix):
            return [found.name for found in self.client.list_buckets() if found.name.startswith(prefix)]

    def keys_older_than(self, bucket: str, prefix: str, before: datetime) -> Iterator[str]:
        """Keys under `prefix` last written before `before`, listed a page (1 000 keys) at a time as they are
        taken, so a bucket of any size is never held at once."""
        with _translated(bucket, prefix):
            for found in self.client.list_objects(bucket, prefix=prefix, recursive=True):
                if found.last_modified is not None and found.last_modified < before:
                    yield found.object_name

    def multipart_older_than(self, bucket: str, prefix: str, before: datetime) -> list[tuple[str, str]]:
        """(key, UploadId) of unfinished multipart uploads under `prefix` started before `before`.

        The one private SDK call here: S3's ListMultipartUploads is a bucket request, which the SDK cannot presign.
        """
        found, markers = [], {}
        with _translated(bucket, prefix):
            while True:
                page = self.client._list_multipart_uploads(bucket, prefix=prefix, **markers)
                found += [(u.object_name, u.upload_id) for u in page.uploads if u.initiated_time and
                          u.initiated_time < before]  # fmt: skip
                if not page.is_truncated:
                    return found
                markers = {"key_marker": page.next_key_marker, "upload_id_marker": page.next_upload_id_marker}

    def _signed(self, method: str, bucket: str, key: str, query: dict[str, str], body: bytes | None = None) -> bytes:
        """Send a request presigned by the SDK; the response body, or the S3 error as a domain error."""
        with _translated(bucket, key):
            url = self.client.get_presigned_url(method, bucket, key, _OWN_REQUEST_EXPIRY, extra_query_params=query)
            response = self._http.request(method, url, body=body)
        if response.status >= 300:
            self._refused(bucket, key, response.data)
        return response.data

    @staticmethod
    def _refused(bucket: str, key: str, body: bytes) -> None:
        code = ElementTree.fromstring(body).findtext("Code") if body else None
        raise _refusal(code, f"{bucket}/{key}")


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


def _refusal(code: str | None, where: str) -> CellCommonsError:
    """The domain error for an S3 error code about `where`."""
    if code in _MISSING:
        return NotFound(f"no object {where}")
    if code == "PreconditionFailed":
        return Conflict(f"object {where} changed while it was being read")
    if code in _REFUSED_PARTS:
        return InvalidInput(f"the parts are not those uploaded ({code})", field="parts")
    # Outages reach API callers: bucket names and keys are internal (the log has them), the reason is not.
    log.warning("object storage refused %s: %s", where, code)
    return Unavailable(f"object storage refused the platform's request ({code}); try again shortly")


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
            raise _refusal(exc.code, self.where) from None
        if isinstance(exc, HTTPError | OSError):
            log.warning("object storage unreachable for %s: %s", self.where, exc)
            raise Unavailable(OBJECT_STORAGE_DOWN) from None
        return False
