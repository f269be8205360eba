"""What an API caller reads when object storage is down or refuses the platform: no bucket, key or endpoint."""

from __future__ import annotations

import hashlib
import socket

import pytest
from minio import Minio
from tests.storage.files import member, put

from cellcommons.auth.principal import Role
from cellcommons.errors import Unavailable
from cellcommons.storage import uploads
from cellcommons.storage.object_store import ObjectStore

CONTENT = b"lot,viability\nLDN-1,93.5\n" * 100


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _assert_names_nothing_internal(error: Unavailable, settings, endpoint: str) -> None:
    assert error.code == "unavailable"
    for internal in (settings.bucket("inst-"), "staging/", "files/", endpoint):
        assert internal not in error.message, error.message


async def test_object_storage_down_at_upload_request_names_no_bucket_or_endpoint(session, settings, leiden, draft):
    endpoint = f"127.0.0.1:{_closed_port()}"
    down = ObjectStore(Minio(endpoint, "key", "secret-key", secure=False, region=settings.s3_region))
    with pytest.raises(Unavailable) as caught:
        await uploads.request_upload(
            session, down, settings, member(leiden, Role.submitter), draft.distributions[0].id,
            sha256=hashlib.sha256(CONTENT).hexdigest(), size_bytes=len(CONTENT),
        )  # fmt: skip
    _assert_names_nothing_internal(caught.value, settings, endpoint)


async def test_object_storage_refusing_the_platform_names_no_bucket_or_key(
    session, object_store, settings, leiden, draft
):
    submitter = member(leiden, Role.submitter)
    ticket = await uploads.request_upload(
        session, object_store, settings, submitter, draft.distributions[0].id,
        sha256=hashlib.sha256(CONTENT).hexdigest(), size_bytes=len(CONTENT),
    )  # fmt: skip
    assert await put(ticket.url, CONTENT) == 200
    impostor = ObjectStore(
        Minio(settings.s3_endpoint, settings.s3_access_key, "not-the-secret", secure=False, region=settings.s3_region)
    )
    with pytest.raises(Unavailable) as caught:
        await uploads.complete_upload(session, impostor, settings, submitter, ticket.upload_id)
    _assert_names_nothing_internal(caught.value, settings, settings.s3_endpoint)
    assert "refused" in caught.value.message
