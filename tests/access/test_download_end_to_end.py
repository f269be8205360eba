"""Issue 11 end to end on the real PostgreSQL and S3 server: a file uploaded and verified for Leiden's restricted
dataset → Lowlands (BE, in the EEA) requests it for health research → the matcher finds it compatible → Leiden's
steward approves with DUA terms → the agreement covers the version → Lowlands' researcher gets a presigned URL →
a plain HTTP GET returns bytes with the recorded SHA-256. After revocation, and after expiry (by the date alone
and after the sweep), the same researcher gets exactly the NotFound of a missing file and no URL is issued;
Stroma, which has no agreement, gets that NotFound too.

Everything runs in the rolled-back session: issuing a URL needs no other process to see the rows, and the
object store's bytes are fetched over HTTP as any client would.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select
from tests.access.conftest import Consortium
from tests.storage.conftest import remove_institution_buckets  # noqa: F401  (institution buckets go after each test)
from tests.storage.files import draft_dataset, get, member, publish, upload

from cellcommons.access import agreements, decisions, repository, requests
from cellcommons.access.agreements import covered_dataset_versions
from cellcommons.access.models import AccessRequest, Agreement, AgreementStatus, RequestStatus, TransferMechanism
from cellcommons.access.schemas import TermsIn
from cellcommons.audit.models import AuditEvent
from cellcommons.auth.principal import Principal, Role
from cellcommons.catalogue.models import Dataset, DatasetVersion, DataUseCondition, Distribution
from cellcommons.errors import NotFound
from cellcommons.storage import downloads

HMB = "DUO:0000006"
CELLS = b"lot,marker,percent_positive\nLDN-BM-24-017,CD73,98.1\nLDN-BM-24-017,CD90,97.4\n" * 200
ISSUED = "file.download_url_issued"
MISSING = {"code": "not_found", "message": "no distribution with this id", "field": "distributionId"}


@dataclass
class SharedFile:
    dataset: Dataset
    version: DatasetVersion
    distribution: Distribution


@pytest.fixture
async def shared_file(session, object_store, settings, consortium: Consortium) -> SharedFile:
    """Leiden's restricted HMB dataset with one file uploaded through the real upload path, then published."""
    leiden = consortium.institutions["leiden"]
    version = await draft_dataset(session, leiden, ["cells.csv"], access_rights="restricted")
    session.add(DataUseCondition(dataset_version_id=version.id, term=HMB))
    await session.flush()
    distribution = await upload(
        session, object_store, settings, member(leiden, Role.submitter), version.distributions[0].id, CELLS
    )
    await publish(session, version)
    return SharedFile(await session.get_one(Dataset, version.dataset_id), version, distribution)


@pytest.fixture
def bob(consortium: Consortium) -> Principal:
    return consortium.member("lowlands", "bob")


@pytest.fixture
def steward(consortium: Consortium) -> Principal:
    return consortium.member("leiden", "lea", Role.steward)


async def _approved(
    session, bob: Principal, steward: Principal, shared: SharedFile, on: date | None = None, **terms
) -> Agreement:
    """Bob requests the dataset for health research; the matcher's verdict is kept; Leiden's steward approves
    (`on` that day)."""
    today = agreements.today()
    raw = {
        "datasets": [shared.dataset.id], "purpose_terms": [HMB], "commercial_use": False,
        "lay_summary": "Post-thaw immunophenotype of BM-MSC lots", "ethics_reference": "EC-BE-2026-042",
        "period_start": today, "period_end": today + timedelta(days=365),
    }  # fmt: skip
    parsed = requests.parse_request(raw)
    request = await requests.create_request(session, bob, parsed, node_id=shared.dataset.origin_node)
    await requests.submit(session, bob, request.id, node_id=shared.dataset.origin_node)
    [part] = await repository.requested_datasets(session, request.id)
    assert part.verdict["compatibility"] == "compatible", part.verdict
    agreement = await decisions.approve(
        session, steward, request.id,
        TermsIn(publication_terms="acknowledge Leiden SCGT", document_reference="DUA-LDN-2026-7", **terms), on=on,
    )  # fmt: skip
    assert agreement.status is AgreementStatus.active
    assert agreement.transfer_mechanism is TransferMechanism.intra_eea
    assert agreement.publication_terms == "acknowledge Leiden SCGT"
    return agreement


async def _url(session, object_store, settings, principal, distribution_id) -> str:
    link = await downloads.issue_download_url(session, object_store, settings, principal, distribution_id)
    return link.url


async def _refused(session, object_store, settings, principal, distribution_id) -> dict:
    """The error a principal gets for a download URL, checking that no URL was issued (no audit event added)."""
    before = await _issued_count(session)
    link = None
    with pytest.raises(NotFound) as caught:
        link = await downloads.issue_download_url(session, object_store, settings, principal, distribution_id)
    assert link is None
    assert await _issued_count(session) == before
    return caught.value.as_dict()


async def _issued_count(session) -> int:
    return await session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == ISSUED))


async def _fetch_verified(url: str, recorded_sha256: str) -> bytes:
    response = await get(url)
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == recorded_sha256
    return response.content


async def test_request_approve_download_and_verify_then_revocation_stops_new_urls(
    session, object_store, settings, consortium, shared_file, bob, steward
):
    file_id = shared_file.distribution.id
    recorded = shared_file.distribution.sha256
    assert recorded == hashlib.sha256(CELLS).hexdigest() and shared_file.distribution.size_bytes == len(CELLS)
    # Before any agreement Bob sees the file's metadata but gets the answer for a missing file.
    assert await _refused(session, object_store, settings, bob, file_id) == MISSING

    agreement = await _approved(session, bob, steward, shared_file)
    request = await session.get_one(AccessRequest, agreement.request_id)
    assert request.status is RequestStatus.active
    assert shared_file.version.id in await covered_dataset_versions(session, bob)
    # Any member of the recipient institution is covered; other institutions are not.
    assert shared_file.version.id in await covered_dataset_versions(session, consortium.member("lowlands", "ann"))
    assert await covered_dataset_versions(session, consortium.member("stroma", "dave")) == set()

    issued = await _url(session, object_store, settings, bob, file_id)
    assert await _fetch_verified(issued, recorded) == CELLS
    event = await session.scalar(select(AuditEvent).where(AuditEvent.action == ISSUED))
    assert (event.actor, event.institution, event.target) == ("user:bob", "leiden-scgt", f"distribution:{file_id}")
    assert event.details["requester_institution"] == "lowlands-regmed"
    assert event.details["files"] == [{"distribution": str(file_id), "file_name": "cells.csv", "sha256": recorded}]

    # Stroma (no agreement) gets exactly what a missing file answers, for the real id and for a made-up one.
    dave = consortium.member("stroma", "dave", Role.steward)
    assert await _refused(session, object_store, settings, dave, file_id) == MISSING
    assert await _refused(session, object_store, settings, dave, uuid.uuid4()) == MISSING

    await decisions.revoke(session, steward, agreement.id, "ethics approval withdrawn")
    assert agreement.status is AgreementStatus.revoked and request.status is RequestStatus.revoked
    assert shared_file.version.id not in await covered_dataset_versions(session, bob)
    missing = await _refused(session, object_store, settings, bob, uuid.uuid4())
    assert await _refused(session, object_store, settings, bob, file_id) == missing == MISSING
    # S3 cannot recall a signature: the URL issued before revocation lives until it expires (downloads.py).
    assert (await get(issued)).status_code == 200


async def test_expiry_stops_new_urls_by_the_date_alone_and_after_the_sweep(
    session, object_store, settings, monkeypatch, shared_file, bob, steward
):
    file_id, recorded = shared_file.distribution.id, shared_file.distribution.sha256
    agreement = await _approved(session, bob, steward, shared_file, expires_on=agreements.today() + timedelta(days=40))
    await _fetch_verified(await _url(session, object_store, settings, bob, file_id), recorded)

    # The clock moves on; no sweep has run, the agreement still says `active`.
    monkeypatch.setattr(agreements, "today", lambda: agreement.expires_on - timedelta(days=1))
    await _fetch_verified(await _url(session, object_store, settings, bob, file_id), recorded)
    monkeypatch.setattr(agreements, "today", lambda: agreement.expires_on)
    assert agreement.status is AgreementStatus.active
    assert await _refused(session, object_store, settings, bob, file_id) == MISSING
    monkeypatch.undo()

    # The sweep on the expiry date marks it expired: from then on no URL even at today's date.
    await _fetch_verified(await _url(session, object_store, settings, bob, file_id), recorded)
    expired, _ = await decisions.sweep_agreements(session, agreement.expires_on)
    assert expired == 1 and agreement.status is AgreementStatus.expired
    assert await _refused(session, object_store, settings, bob, file_id) == MISSING


async def test_an_agreement_whose_term_ended_in_the_past_grants_no_url(
    session, object_store, settings, shared_file, bob, steward
):
    today = agreements.today()
    agreement = await _approved(  # approved 60 days ago, for a term that ended yesterday
        session, bob, steward, shared_file, on=today - timedelta(days=60),
        effective_on=today - timedelta(days=60), expires_on=today - timedelta(days=1),
    )  # fmt: skip
    assert agreement.expires_on < today
    assert shared_file.version.id not in await covered_dataset_versions(session, bob)
    assert await _refused(session, object_store, settings, bob, shared_file.distribution.id) == MISSING
