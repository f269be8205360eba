"""Presigned downloads and manifests: only for principals the policy allows, every issuance audited, and the S3
server itself refusing URLs that were not issued for exactly that object and time."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from tests.storage.files import get, institution, member, publish, published_file, upload

from cellcommons.audit.models import AuditEvent
from cellcommons.auth.principal import Role
from cellcommons.db import Database
from cellcommons.errors import Conflict, InvalidInput, NotFound
from cellcommons.storage import downloads

FLOW = b"marker,percent\nCD73,98.1\n" * 100
COUNTS = b"cells,viability\n1000000,93.5\n" * 100


@pytest.fixture
async def uploaded(session, object_store, settings, leiden, draft):
    """The draft's first file uploaded; the second left without contents."""
    await upload(session, object_store, settings, member(leiden, Role.submitter), draft.distributions[0].id, FLOW)
    return draft


async def _url(session, object_store, settings, principal, distribution_id, **kwargs):
    link = await downloads.issue_download_url(session, object_store, settings, principal, distribution_id, **kwargs)
    return link.url


async def test_stewards_and_submitters_of_the_owner_download(session, object_store, settings, leiden, uploaded):
    for role in (Role.steward, Role.submitter):
        url = await _url(session, object_store, settings, member(leiden, role), uploaded.distributions[0].id)
        assert (await get(url)).content == FLOW


async def test_everyone_else_gets_the_answer_for_a_missing_file(
    session, object_store, settings, leiden, maple, uploaded
):
    await publish(session, uploaded)  # restricted and published: Maple sees the metadata, not the contents
    flow = uploaded.distributions[0].id
    answers = []
    for principal, distribution_id in [
        (member(leiden), flow),  # a reader of the owner
        (member(maple, Role.steward), flow),  # another institution without a DUA
        (None, flow),  # anonymous
        (member(leiden, Role.steward), uuid.uuid4()),  # missing
    ]:
        with pytest.raises(NotFound) as caught:
            await _url(session, object_store, settings, principal, distribution_id)
        answers.append(caught.value.as_dict())
    assert all(a == {"code": "not_found", "message": "no distribution with this id", "field": "distributionId"}
               for a in answers)  # fmt: skip
    events = await session.scalar(select(AuditEvent.id).where(AuditEvent.action == "file.download_url_issued"))
    assert events is None


async def test_a_file_not_uploaded_yet_has_no_url(session, object_store, settings, leiden, uploaded):
    with pytest.raises(Conflict) as caught:
        await _url(session, object_store, settings, member(leiden, Role.steward), uploaded.distributions[1].id)
    assert caught.value.field == "distributionId"


async def test_urls_live_five_minutes_by_default_and_never_more_than_fifteen(
    session, object_store, settings, leiden, uploaded
):
    steward, flow = member(leiden, Role.steward), uploaded.distributions[0].id
    expiry = lambda url: parse_qs(urlsplit(url).query)["X-Amz-Expires"]  # noqa: E731
    assert expiry(await _url(session, object_store, settings, steward, flow)) == ["300"]
    assert expiry(await _url(session, object_store, settings, steward, flow, expires_in=900)) == ["900"]
    for bad in (0, 901, 3600):
        with pytest.raises(InvalidInput) as caught:
            await _url(session, object_store, settings, steward, flow, expires_in=bad)
        assert caught.value.field == "expiresIn"


async def test_the_s3_server_refuses_a_sibling_key_a_tampered_url_and_an_expired_one(
    session, object_store, settings, leiden, draft
):
    steward, submitter = member(leiden, Role.steward), member(leiden, Role.submitter)
    flow, counts = draft.distributions
    await upload(session, object_store, settings, submitter, flow.id, FLOW)
    await upload(session, object_store, settings, submitter, counts.id, COUNTS)
    url = await _url(session, object_store, settings, steward, flow.id)
    assert (await get(url)).status_code == 200
    sibling = url.replace(str(flow.id), str(counts.id)).replace(flow.storage_key.rsplit("/", 1)[1],
                                                                counts.storage_key.rsplit("/", 1)[1])  # fmt: skip
    assert sibling != url and (await get(sibling)).status_code == 403
    assert (await get(url.replace("X-Amz-Expires=300", "X-Amz-Expires=900"))).status_code == 403
    assert (await get(url.replace("filename", "filenamx"))).status_code == 403  # the response headers are signed
    short = await _url(session, object_store, settings, steward, flow.id, expires_in=1)
    await asyncio.sleep(2.1)
    assert (await get(short)).status_code == 403


async def test_if_the_audit_append_fails_no_url_is_issued(fresh_settings, object_store):
    """Another transaction holds the audit chain's head; the append gives up after the lock timeout."""
    database = Database(fresh_settings)
    try:
        shared = await published_file(database, object_store, fresh_settings, "leiden-scgt", "restricted", FLOW)
        async with database.unit_of_work() as holder, database.unit_of_work() as session:
            await holder.execute(text("SELECT seq FROM audit_chain_head FOR UPDATE"))
            steward = member(await institution(session, "leiden-scgt"), Role.steward)
            await session.execute(text("SET LOCAL lock_timeout = '300ms'"))
            issued = None
            with pytest.raises(DBAPIError, match="lock timeout"):
                issued = await _url(session, object_store, fresh_settings, steward, shared.distribution_id)
            assert issued is None
            await session.rollback()
    finally:
        await database.dispose()


async def test_a_manifest_lists_every_uploaded_file_with_url_size_and_checksum(
    session, object_store, settings, leiden, maple, draft
):
    submitter = member(leiden, Role.submitter)
    flow, counts = draft.distributions
    await upload(session, object_store, settings, submitter, flow.id, FLOW)
    manifest = await downloads.download_manifest(session, object_store, settings, member(leiden, Role.steward),
                                                 draft.id)  # fmt: skip
    assert [(f.distribution.file_name, f.distribution.size_bytes) for f in manifest.files] == [("flow.csv", len(FLOW))]
    await upload(session, object_store, settings, submitter, counts.id, COUNTS)
    manifest = await downloads.download_manifest(session, object_store, settings, submitter, draft.id)
    assert [f.distribution.file_name for f in manifest.files] == ["counts.csv", "flow.csv"]
    for link in manifest.files:
        body = (await get(link.url)).content
        assert hashlib.sha256(body).hexdigest() == link.distribution.sha256
    event = await session.scalar(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1))
    assert event.action == "file.manifest_issued" and len(event.details["files"]) == 2
    for principal, version_id in ((member(maple, Role.steward), draft.id), (submitter, uuid.uuid4())):
        with pytest.raises(NotFound) as caught:
            await downloads.download_manifest(session, object_store, settings, principal, version_id)
        assert caught.value.field == "datasetVersionId"


async def test_losing_access_stops_new_urls_while_an_issued_one_lives_until_it_expires(
    session, object_store, settings, leiden, uploaded
):
    flow = uploaded.distributions[0].id
    issued = await _url(session, object_store, settings, member(leiden, Role.steward), flow)
    with pytest.raises(NotFound):
        await _url(session, object_store, settings, member(leiden), flow)  # the steward role withdrawn
    assert (await get(issued)).status_code == 200
