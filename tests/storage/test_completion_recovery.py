"""Completions whose transaction is lost after the file moved, and staged bytes that change under verification."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from tests.storage.files import get, member, put
from tests.storage.test_multipart import PART, _send, _start

from cellcommons.auth.principal import Role
from cellcommons.errors import Conflict
from cellcommons.storage import buckets, downloads, uploads
from cellcommons.storage.models import FileUpload, UploadStatus
from cellcommons.storage.object_store import ObjectStore

CONTENT = b"donor,marker,percent_positive\nD-01,CD73,98.2\n" * 400
LARGE = bytes(range(256)) * (PART // 256) + b"tail"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _completed_then_lost(session, store, settings, submitter, upload_id, parts=None) -> None:
    """A completion that moved the file, then lost its transaction (say, the database went away at commit)."""
    savepoint = await session.begin_nested()
    await uploads.complete_upload(session, store, settings, submitter, upload_id, parts)
    await savepoint.rollback()


async def test_a_single_put_completion_whose_transaction_was_lost_completes_again(
    session, object_store, settings, leiden, draft
):
    submitter = member(leiden, Role.submitter)
    flow = draft.distributions[0]
    ticket = await uploads.request_upload(
        session, object_store, settings, submitter, flow.id, sha256=sha(CONTENT), size_bytes=len(CONTENT)
    )
    assert await put(ticket.url, CONTENT) == 200
    await _completed_then_lost(session, object_store, settings, submitter, ticket.upload_id)

    done = await uploads.complete_upload(session, object_store, settings, submitter, ticket.upload_id)
    assert (done.size_bytes, done.sha256) == (len(CONTENT), sha(CONTENT))
    assert (await session.get(FileUpload, ticket.upload_id)).status is UploadStatus.completed
    link = await downloads.issue_download_url(session, object_store, settings, member(leiden, Role.steward), flow.id)
    assert (await get(link.url)).content == CONTENT


async def test_a_multipart_completion_whose_transaction_was_lost_completes_again(
    session, object_store, settings, leiden, draft
):
    submitter = member(leiden, Role.submitter)
    flow = draft.distributions[0]
    ticket = await _start(session, object_store, settings, submitter, flow.id, LARGE)
    parts = await _send(ticket, LARGE)
    await _completed_then_lost(session, object_store, settings, submitter, ticket.upload_id, parts)

    done = await uploads.complete_upload(session, object_store, settings, submitter, ticket.upload_id, parts)
    assert (done.size_bytes, done.sha256) == (len(LARGE), sha(LARGE))
    bucket = buckets.institution_bucket(settings, leiden.id)
    assert [o.object_name for o in object_store.client.list_objects(bucket, recursive=True)] == [done.storage_key]


class _Overwritten(ObjectStore):
    """Object storage where the client PUTs other bytes to the staging URL just after the completion's stat."""

    def __init__(self, client, url: str):
        super().__init__(client)
        self.url = url

    def stat(self, bucket, key):
        found = super().stat(bucket, key)
        if key.startswith("staging/"):
            assert httpx.put(self.url, content=b"other bytes").status_code == 200
        return found


async def test_bytes_changed_during_verification_are_a_conflict_that_names_no_object(
    session, object_store, settings, leiden, draft
):
    submitter = member(leiden, Role.submitter)
    ticket = await uploads.request_upload(
        session, object_store, settings, submitter, draft.distributions[0].id,
        sha256=sha(CONTENT), size_bytes=len(CONTENT),
    )  # fmt: skip
    assert await put(ticket.url, CONTENT) == 200
    racing = _Overwritten(object_store.client, ticket.url)
    with pytest.raises(Conflict) as caught:
        await uploads.complete_upload(session, racing, settings, submitter, ticket.upload_id)
    assert caught.value.field == "uploadId"
    assert "staging" not in caught.value.message and settings.bucket("inst-") not in caught.value.message
    assert (await session.get(FileUpload, ticket.upload_id)).status is UploadStatus.pending
