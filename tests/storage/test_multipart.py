"""Multipart uploads against the real S3 server: presigned part PUTs, completion with ETags, the same
verification and move into place as a single PUT, and nothing left behind on a mismatch or an abort."""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest
from sqlalchemy import select
from tests.storage.files import get, member

from cellcommons.audit.models import AuditEvent
from cellcommons.auth.principal import Role
from cellcommons.errors import Conflict, InvalidInput, NotFound
from cellcommons.storage import buckets, downloads, multipart, uploads
from cellcommons.storage.models import UploadStatus

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest part: the test sends two full parts and a short last one
CONTENT = os.urandom(2 * PART + 12345)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _send(ticket: uploads.MultipartTicket, data: bytes) -> list[tuple[int, str]]:
    """What a client does with the part URLs: PUT each byte range, keep the ETag each answer names."""
    sent = []
    async with httpx.AsyncClient(timeout=120) as http:
        for part in ticket.parts:
            response = await http.put(part.url, content=data[part.offset : part.offset + part.size])
            assert response.status_code == 200, response.text
            sent.append((part.part_number, response.headers["etag"]))
    return sent


async def _start(session, store, settings, principal, distribution_id, data=CONTENT, **declared):
    declared = {"sha256": sha(data), "size_bytes": len(data), "part_size": PART, **declared}
    return await uploads.request_multipart_upload(session, store, settings, principal, distribution_id, **declared)


def _left_behind(store, bucket: str) -> tuple[list[str], list[str]]:
    """Objects and unfinished multipart uploads in the bucket (the SDK lists the latter only privately)."""
    objects = [o.object_name for o in store.client.list_objects(bucket, recursive=True)]
    unfinished = [u.object_name for u in store.client._list_multipart_uploads(bucket).uploads]
    return objects, unfinished


async def _actions(session, n: int) -> list[str]:
    events = await session.scalars(select(AuditEvent.action).order_by(AuditEvent.id.desc()).limit(n))
    return list(reversed(events.all()))


async def test_parts_put_to_presigned_urls_are_assembled_verified_and_moved_into_place(
    session, object_store, settings, leiden, draft
):
    submitter = member(leiden, Role.submitter)
    flow = draft.distributions[0]
    ticket = await _start(session, object_store, settings, submitter, flow.id)
    assert (ticket.part_size, ticket.part_count) == (PART, 3)
    assert [(p.part_number, p.offset, p.size) for p in ticket.parts] == [
        (1, 0, PART), (2, PART, PART), (3, 2 * PART, 12345),
    ]  # fmt: skip
    sent = await _send(ticket, CONTENT)
    done = await uploads.complete_upload(session, object_store, settings, submitter, ticket.upload_id, sent)
    assert (done.size_bytes, done.sha256) == (len(CONTENT), sha(CONTENT))
    bucket = buckets.institution_bucket(settings, leiden.id)
    assert _left_behind(object_store, bucket) == ([done.storage_key], [])

    link = await downloads.issue_download_url(session, object_store, settings, member(leiden, Role.steward), flow.id)
    assert sha((await get(link.url)).content) == sha(CONTENT)
    assert await _actions(session, 3) == ["file.upload_requested", "file.upload_completed", "file.download_url_issued"]


async def test_a_wrong_checksum_rejects_the_assembled_file_and_leaves_nothing(
    session, object_store, settings, leiden, draft
):
    submitter = member(leiden, Role.submitter)
    ticket = await _start(session, object_store, settings, submitter, draft.distributions[0].id, sha256="0" * 64)
    sent = await _send(ticket, CONTENT)
    with pytest.raises(uploads.UploadRejected) as refused:
        await uploads.complete_upload(session, object_store, settings, submitter, ticket.upload_id, sent)
    assert refused.value.field == "sha256"
    assert _left_behind(object_store, buckets.institution_bucket(settings, leiden.id)) == ([], [])
    assert draft.distributions[0].storage_key is None


async def test_an_abort_deletes_the_parts_and_stops_the_part_urls(session, object_store, settings, leiden, draft):
    submitter = member(leiden, Role.submitter)
    ticket = await _start(session, object_store, settings, submitter, draft.distributions[0].id)
    async with httpx.AsyncClient(timeout=60) as http:
        assert (await http.put(ticket.parts[0].url, content=CONTENT[:PART])).status_code == 200
        aborted = await uploads.abort_upload(session, object_store, settings, submitter, ticket.upload_id)
        assert aborted.status is UploadStatus.aborted and aborted.finished_at is not None
        assert (await http.put(ticket.parts[1].url, content=CONTENT[PART : 2 * PART])).status_code == 404
    assert _left_behind(object_store, buckets.institution_bucket(settings, leiden.id)) == ([], [])
    assert await _actions(session, 1) == ["file.upload_aborted"]
    with pytest.raises(Conflict, match="already aborted"):
        await uploads.complete_upload(session, object_store, settings, submitter, ticket.upload_id, [(1, "x")])


async def test_an_abort_of_a_single_put_deletes_what_was_sent(session, object_store, settings, leiden, draft):
    submitter = member(leiden, Role.submitter)
    data = b"abandoned"
    ticket = await uploads.request_upload(
        session, object_store, settings, submitter, draft.distributions[0].id, sha256=sha(data), size_bytes=len(data)
    )
    async with httpx.AsyncClient(timeout=60) as http:
        assert (await http.put(ticket.url, content=data)).status_code == 200
    await uploads.abort_upload(session, object_store, settings, submitter, ticket.upload_id)
    assert _left_behind(object_store, buckets.institution_bucket(settings, leiden.id)) == ([], [])


async def test_etags_that_are_not_the_uploaded_parts_are_refused_and_the_upload_can_still_complete(
    session, object_store, settings, leiden, draft
):
    submitter = member(leiden, Role.submitter)
    ticket = await _start(session, object_store, settings, submitter, draft.distributions[0].id)
    sent = await _send(ticket, CONTENT)
    wrong = [sent[0], (2, '"0123456789abcdef0123456789abcdef"'), sent[2]]
    with pytest.raises(InvalidInput) as refused:
        await uploads.complete_upload(session, object_store, settings, submitter, ticket.upload_id, wrong)
    assert refused.value.field == "parts"
    for listed in ([], sent[:2], [*sent, (4, "abc")], [sent[0], sent[0], sent[2]], None):
        with pytest.raises(InvalidInput) as incomplete:
            await uploads.complete_upload(session, object_store, settings, submitter, ticket.upload_id, listed)
        assert incomplete.value.field == "parts"
    done = await uploads.complete_upload(session, object_store, settings, submitter, ticket.upload_id, sent[::-1])
    assert done.sha256 == sha(CONTENT)


async def test_expired_part_urls_are_signed_again_for_the_uploader_only(
    session, object_store, settings, leiden, maple, draft
):
    submitter = member(leiden, Role.submitter)
    ticket = await _start(session, object_store, settings, submitter, draft.distributions[0].id)
    (again,) = await uploads.upload_part_urls(session, object_store, settings, submitter, ticket.upload_id, [3])
    assert (again.part_number, again.offset, again.size) == (3, 2 * PART, 12345)
    async with httpx.AsyncClient(timeout=60) as http:
        assert (await http.put(again.url, content=CONTENT[2 * PART :])).status_code == 200
    with pytest.raises(InvalidInput) as out_of_range:
        await uploads.upload_part_urls(session, object_store, settings, submitter, ticket.upload_id, [4])
    assert out_of_range.value.field == "partNumbers"
    stranger = member(maple, Role.submitter)
    for call in (uploads.upload_part_urls, uploads.complete_upload):
        args = (session, object_store, settings, stranger, ticket.upload_id)
        with pytest.raises(NotFound):
            await (call(*args, [3]) if call is uploads.upload_part_urls else call(*args))
    with pytest.raises(NotFound):
        await uploads.abort_upload(session, object_store, settings, stranger, ticket.upload_id)
    await uploads.abort_upload(session, object_store, settings, submitter, ticket.upload_id)


async def test_a_file_above_5_gib_needs_parts_and_gets_a_part_size_that_fits(
    session, object_store, settings, leiden, draft
):
    submitter = member(leiden, Role.submitter)
    large = 6 * 1024**3
    with pytest.raises(InvalidInput, match="larger files go in parts") as single:
        await uploads.request_upload(
            session, object_store, settings, submitter, draft.distributions[0].id, sha256="a" * 64, size_bytes=large
        )
    assert single.value.field == "sizeBytes"
    ticket = await uploads.request_multipart_upload(
        session, object_store, settings, submitter, draft.distributions[0].id, sha256="a" * 64, size_bytes=large
    )
    assert (ticket.part_size, ticket.part_count, len(ticket.parts)) == (64 * MiB, 96, 96)
    assert ticket.parts[-1].offset + ticket.parts[-1].size == large
    await uploads.abort_upload(session, object_store, settings, submitter, ticket.upload_id)
    assert _left_behind(object_store, buckets.institution_bucket(settings, leiden.id)) == ([], [])


async def test_parts_only_belong_to_multipart_uploads(session, object_store, settings, leiden, draft):
    submitter = member(leiden, Role.submitter)
    data = b"one request"
    ticket = await uploads.request_upload(
        session, object_store, settings, submitter, draft.distributions[0].id, sha256=sha(data), size_bytes=len(data)
    )
    with pytest.raises(InvalidInput) as refused:
        await uploads.complete_upload(session, object_store, settings, submitter, ticket.upload_id, [(1, '"abc"')])
    assert refused.value.field == "parts"
    with pytest.raises(InvalidInput) as not_multipart:
        await uploads.upload_part_urls(session, object_store, settings, submitter, ticket.upload_id, [1])
    assert not_multipart.value.field == "uploadId"


@pytest.mark.parametrize(
    ("size", "requested", "expected"),
    [
        (10 * MiB, None, multipart.DEFAULT_PART_BYTES),
        (5 * 1024**4, None, 525 * MiB),  # 5 TiB in at most 10,000 parts
        (10 * MiB, 5 * MiB, 5 * MiB),
    ],
)
def test_the_part_size_keeps_within_s3_limits(size, requested, expected):
    chosen = multipart.part_size_for(size, requested)
    assert chosen == expected and multipart.part_count(size, chosen) <= multipart.MAX_PARTS


@pytest.mark.parametrize(
    ("size", "requested"),
    [(10 * MiB, 5 * MiB - 1), (10 * MiB, 6 * 1024**3), (100 * 1024**3, 5 * MiB), (10 * MiB, 5.5 * MiB), (1, True)],
)
def test_a_part_size_outside_s3_limits_is_refused_by_name(size, requested):
    with pytest.raises(InvalidInput) as refused:
        multipart.part_size_for(size, requested)
    assert refused.value.field == "partSizeBytes"


def test_part_urls_come_a_thousand_at_most_and_only_for_the_uploads_parts():
    size = 2000 * PART
    with pytest.raises(InvalidInput, match="at most 1000") as many:
        multipart.parts(size, PART, range(1, 1002))
    assert many.value.field == "partNumbers"
    for wrong in ([0], [2001], [True], ["1"]):
        with pytest.raises(InvalidInput):
            multipart.parts(size, PART, wrong)
    assert [(p.number, p.offset, p.size) for p in multipart.parts(size + 1, PART, [2001])] == [(2001, size, 1)]
