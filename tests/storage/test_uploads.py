"""Uploads against the real PostgreSQL and S3 server: presigned PUT, streamed verification, move into place."""

from __future__ import annotations

import hashlib
import tracemalloc
import uuid

import httpx
import pytest
from sqlalchemy import func, select
from tests.storage.files import get, member, publish, put, upload

from cellcommons.audit.models import AuditEvent
from cellcommons.auth.principal import Role
from cellcommons.errors import Conflict, Forbidden, InvalidInput, NotFound
from cellcommons.storage import buckets, downloads, uploads
from cellcommons.storage.models import FileUpload, UploadStatus

CONTENT = b"donor,marker,percent_positive\nD-01,CD73,98.2\nD-01,CD90,97.5\n" * 500


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def objects(store, bucket: str) -> list[str]:
    if not store.client.bucket_exists(bucket):
        return []
    return sorted(o.object_name for o in store.client.list_objects(bucket, recursive=True))


async def _request(session, object_store, settings, principal, distribution_id, data=CONTENT, **declared):
    declared = {"sha256": sha(data), "size_bytes": len(data), **declared}
    return await uploads.request_upload(session, object_store, settings, principal, distribution_id, **declared)


async def test_upload_complete_then_download_with_a_plain_http_client(session, object_store, settings, leiden, draft):
    submitter = member(leiden, Role.submitter)
    flow = draft.distributions[0]
    ticket = await _request(session, object_store, settings, submitter, flow.id)
    assert ticket.method == "PUT" and "staging" in ticket.url
    assert await put(ticket.url, CONTENT) == 200
    done = await uploads.complete_upload(session, object_store, settings, submitter, ticket.upload_id)
    assert (done.size_bytes, done.sha256) == (len(CONTENT), sha(CONTENT))
    bucket = buckets.institution_bucket(settings, leiden.id)
    assert objects(object_store, bucket) == [done.storage_key]  # staging emptied, one file in place
    assert object_store.stat(bucket, done.storage_key).content_type == "text/csv"

    link = await downloads.issue_download_url(session, object_store, settings, member(leiden, Role.steward), flow.id)
    response = await get(link.url)
    assert response.status_code == 200 and sha(response.content) == sha(CONTENT)
    assert 'filename="flow.csv"' in response.headers["content-disposition"]
    ranged = await get(link.url, Range="bytes=10-19")
    assert ranged.status_code == 206 and ranged.content == CONTENT[10:20]

    events = (await session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(3))).all()
    assert [e.action for e in reversed(events)] == [
        "file.upload_requested", "file.upload_completed", "file.download_url_issued",
    ]  # fmt: skip
    for event in events:
        assert event.institution == "leiden-scgt"
        assert done.storage_key not in str(event.details) and "http" not in str(event.details)


@pytest.mark.parametrize("wrong", ["checksum", "size"])
async def test_a_mismatch_rejects_the_upload_and_leaves_nothing_behind(
    session, object_store, settings, leiden, draft, wrong
):
    submitter = member(leiden, Role.submitter)
    flow = draft.distributions[0]
    declared = {"sha256": sha(b"something else")} if wrong == "checksum" else {"size_bytes": len(CONTENT) + 1}
    ticket = await _request(session, object_store, settings, submitter, flow.id, **declared)
    assert await put(ticket.url, CONTENT) == 200
    with pytest.raises(uploads.UploadRejected) as caught:
        await uploads.complete_upload(session, object_store, settings, submitter, ticket.upload_id)
    assert caught.value.code == "checksum_mismatch"
    assert caught.value.field == ("sha256" if wrong == "checksum" else "sizeBytes")
    assert objects(object_store, buckets.institution_bucket(settings, leiden.id)) == []
    await session.refresh(flow)
    assert (flow.sha256, flow.storage_key) == (None, None)
    assert (await session.get(FileUpload, ticket.upload_id)).status is UploadStatus.rejected
    with pytest.raises(Conflict, match="already rejected"):
        await uploads.complete_upload(session, object_store, settings, submitter, ticket.upload_id)


async def test_completing_before_the_bytes_arrive_is_a_conflict(session, object_store, settings, leiden, draft):
    submitter = member(leiden, Role.submitter)
    ticket = await _request(session, object_store, settings, submitter, draft.distributions[0].id)
    with pytest.raises(Conflict) as caught:
        await uploads.complete_upload(session, object_store, settings, submitter, ticket.upload_id)
    assert caught.value.field == "uploadId" and "staging" not in caught.value.message


@pytest.mark.parametrize(
    ("declared", "field"),
    [
        ({"sha256": "not-a-checksum"}, "sha256"),
        ({"sha256": "ab" * 31}, "sha256"),
        ({"size_bytes": -1}, "sizeBytes"),
        ({"size_bytes": 5 * 1024**3 + 1}, "sizeBytes"),
    ],
)
async def test_a_bad_declaration_names_the_field_and_writes_nothing(
    session, object_store, settings, leiden, draft, declared, field
):
    with pytest.raises(InvalidInput) as caught:
        await _request(session, object_store, settings, member(leiden, Role.submitter), draft.distributions[0].id,
                       **declared)  # fmt: skip
    assert caught.value.field == field
    assert await session.scalar(select(func.count()).select_from(FileUpload)) == 0


async def test_only_the_owners_submitters_upload_and_hidden_reads_like_missing(
    session, object_store, settings, leiden, maple, draft
):
    flow = draft.distributions[0].id
    with pytest.raises(Forbidden):
        await _request(session, object_store, settings, member(leiden, Role.steward), flow)
    answers = []
    for distribution_id in (flow, uuid.uuid4()):  # a draft of Leiden is hidden from Maple
        with pytest.raises(NotFound) as caught:
            await _request(session, object_store, settings, member(maple, Role.submitter), distribution_id)
        answers.append(caught.value.as_dict())
    assert answers[0] == answers[1] == {"code": "not_found", "message": "no distribution with this id",
                                        "field": "distributionId"}  # fmt: skip

    ticket = await _request(session, object_store, settings, member(leiden, Role.submitter), flow)
    for upload_id in (ticket.upload_id, uuid.uuid4()):
        with pytest.raises(NotFound) as caught:
            await uploads.complete_upload(session, object_store, settings, member(maple, Role.submitter), upload_id)
        assert caught.value.as_dict() == {"code": "not_found", "message": "no upload with this id", "field": "uploadId"}


async def test_a_published_versions_files_cannot_change(session, object_store, settings, leiden, draft):
    submitter = member(leiden, Role.submitter)
    await upload(session, object_store, settings, submitter, draft.distributions[0].id, CONTENT)
    await publish(session, draft)
    with pytest.raises(Conflict, match="published"):
        await _request(session, object_store, settings, submitter, draft.distributions[1].id)


def _chunks(size: int, chunk: int = 1024 * 1024):
    """The same bytes on every call, made on the fly (never all in memory); every chunk different."""
    block = bytes(range(256)) * (chunk // 256)
    for n in range(size // chunk):
        yield n.to_bytes(8, "big") + block[8:]


async def _generated(size: int):
    for piece in _chunks(size):
        yield piece


@pytest.mark.slow
async def test_a_file_of_several_hundred_megabytes_streams_through_without_being_held(
    session, object_store, settings, leiden, draft
):
    size = 320 * 1024 * 1024
    # The checksum is declared before the upload, as a client computes it first: one pass to hash …
    digest = hashlib.sha256()
    for piece in _chunks(size):
        digest.update(piece)
    declared = digest.hexdigest()
    submitter = member(leiden, Role.submitter)
    flow = draft.distributions[0]
    ticket = await _request(session, object_store, settings, submitter, flow.id, sha256=declared, size_bytes=size)
    # … and the same bytes again for the PUT, streamed with a known Content-Length.
    assert await put(ticket.url, _generated(size), **{"Content-Length": str(size)}) == 200

    tracemalloc.start()
    done = await uploads.complete_upload(session, object_store, settings, submitter, ticket.upload_id)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (done.size_bytes, done.sha256) == (size, declared)
    assert peak < 32 * 1024 * 1024, f"verification held {peak / 2**20:.0f} MiB"

    link = await downloads.issue_download_url(session, object_store, settings, submitter, flow.id)
    received, total = hashlib.sha256(), 0
    async with httpx.AsyncClient(timeout=600) as http, http.stream("GET", link.url) as streamed:
        async for piece in streamed.aiter_bytes(1024 * 1024):
            received.update(piece)
            total += len(piece)
    assert (total, received.hexdigest()) == (size, declared)
