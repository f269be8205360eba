"""What an agreement grants: `covered_dataset_versions` on agreement rows written directly (the decision
service that normally writes them is tested end to end in test_decisions.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from tests.access.conftest import HMB
from tests.catalogue.factories import valid_dataset

from cellcommons.access.agreements import covered_dataset_versions
from cellcommons.access.models import (
    AccessRequest,
    Agreement,
    AgreementDataset,
    AgreementStatus,
    EndOfTerm,
    OnwardTransfer,
    RequestStatus,
    TransferMechanism,
)
from cellcommons.access.visibility import downloadable_dataset_versions
from cellcommons.catalogue import service
from cellcommons.catalogue.models import DatasetVersion

TODAY = date(2026, 9, 1)


async def _agreement(session, consortium, recipient="lowlands", provider="leiden", **terms) -> Agreement:
    recipient_row = consortium.institutions[recipient]
    request = AccessRequest(
        requester_institution_id=recipient_row.id, requester_subject="bob", requester_actor="user:bob",
        status=RequestStatus.active, purpose_terms=["DUO:0000006"], methods_development=False, commercial_use=False,
        lay_summary="MSC potency", period_start=TODAY, period_end=TODAY + timedelta(days=365),
    )  # fmt: skip
    session.add(request)
    await session.flush()
    values = dict(
        request_id=request.id, provider_institution_id=consortium.institutions[provider].id,
        recipient_institution_id=recipient_row.id, recipient_subject="bob", recipient_country=recipient_row.country,
        purpose={}, status=AgreementStatus.active, approved_at=datetime.now(UTC),
        effective_on=TODAY - timedelta(days=10), expires_on=TODAY + timedelta(days=100),
        transfer_mechanism=TransferMechanism.intra_eea, onward_transfer=OnwardTransfer.prohibited,
        end_of_term=EndOfTerm.destroy, export_policy={"direct_identifier": "drop"},
    )  # fmt: skip
    agreement = Agreement(**{**values, **terms})
    session.add(agreement)
    await session.flush()
    session.add(AgreementDataset(agreement_id=agreement.id, dataset_id=consortium.datasets[provider].id))
    await session.flush()
    return agreement


async def test_an_agreement_in_force_covers_its_versions_for_the_recipient_institution_only(session, consortium):
    await _agreement(session, consortium)
    leiden_version = consortium.versions["leiden"].id
    bob = consortium.member("lowlands", "someone-else")  # any member of the recipient institution
    assert await covered_dataset_versions(session, bob, on=TODAY) == {leiden_version}
    assert await covered_dataset_versions(session, consortium.member("stroma", "eve"), on=TODAY) == set()
    assert await covered_dataset_versions(session, None, on=TODAY) == set()
    # The policy's SQL form grants the download with the covered set.
    covered = await covered_dataset_versions(session, bob, on=TODAY)
    downloadable = await session.scalars(select(DatasetVersion.id).where(downloadable_dataset_versions(bob, covered)))
    assert set(downloadable) == {leiden_version}


@pytest.mark.parametrize(
    ("on", "covered"),
    [(TODAY - timedelta(days=11), False), (TODAY - timedelta(days=10), True), (TODAY + timedelta(days=99), True),
     (TODAY + timedelta(days=100), False)],
)  # fmt: skip
async def test_coverage_follows_the_term_to_the_day(session, consortium, on, covered):
    await _agreement(session, consortium)
    bob = consortium.member("lowlands", "bob")
    assert (consortium.versions["leiden"].id in await covered_dataset_versions(session, bob, on=on)) is covered


async def test_revoked_and_expired_agreements_cover_nothing(session, consortium):
    agreement = await _agreement(session, consortium)
    bob = consortium.member("lowlands", "bob")
    agreement.status, agreement.revoked_at = AgreementStatus.revoked, datetime.now(UTC)
    await session.flush()
    assert await covered_dataset_versions(session, bob, on=TODAY) == set()
    agreement.status, agreement.revoked_at = AgreementStatus.expired, None
    await session.flush()
    assert await covered_dataset_versions(session, bob, on=TODAY) == set()


async def test_later_versions_are_covered_only_when_the_terms_say_so(session, consortium):
    agreement = await _agreement(session, consortium)
    leiden = consortium.institutions["leiden"]
    accession = consortium.datasets["leiden"].accession
    content = valid_dataset(batches=[], conditions=[HMB], title="second version")
    await service.save_dataset(session, leiden, content, origin=consortium.node_id, accession=accession)
    second = await service.publish(session, leiden, accession)
    bob = consortium.member("lowlands", "bob")
    assert await covered_dataset_versions(session, bob, on=TODAY) == {consortium.versions["leiden"].id}
    agreement.covers_later_versions = True
    await session.flush()
    assert await covered_dataset_versions(session, bob, on=TODAY) == {consortium.versions["leiden"].id, second.id}


async def test_the_database_refuses_an_active_agreement_outside_the_eea_without_a_transfer_mechanism(
    session, consortium
):
    with pytest.raises(IntegrityError, match="transfer_gate"):
        async with session.begin_nested():
            await _agreement(session, consortium, recipient="maple", transfer_mechanism=None)
    agreement = await _agreement(session, consortium, recipient="maple", transfer_mechanism=TransferMechanism.scc)
    assert agreement.status is AgreementStatus.active
