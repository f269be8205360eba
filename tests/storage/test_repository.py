"""The files' one-statement download rule against the policy's own two-step form (covered versions fetched
first, then `downloadable_dataset_versions`), on agreements written directly as in tests/access."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from tests.access import conftest as access_setup
from tests.access.test_agreements import TODAY, _agreement
from tests.catalogue.factories import valid_dataset

from cellcommons.access import agreements
from cellcommons.access.agreements import covered_dataset_versions
from cellcommons.access.models import AgreementStatus
from cellcommons.access.visibility import downloadable_dataset_versions
from cellcommons.auth.principal import Role
from cellcommons.catalogue import service
from cellcommons.catalogue.models import DatasetVersion, Distribution
from cellcommons.storage import repository

consortium = access_setup.consortium  # the fixture of tests/access


async def _two_step(session, principal) -> set:
    covered = await covered_dataset_versions(session, principal, on=TODAY)
    return set(
        await session.scalars(select(DatasetVersion.id).where(downloadable_dataset_versions(principal, covered)))
    )


async def _one_statement(session, principal, versions) -> set:
    found = [await repository.downloadable_version(session, principal, v) for v in versions]
    return {row[0].id for row in found if row is not None}


async def _single_and_batch_agree(session, principal, versions) -> set:
    """The issuance's single-file statement (run on the driver) against the list form, file by file."""
    files = list(await session.scalars(select(Distribution.id).where(Distribution.dataset_version_id.in_(versions))))
    batch = {t.distribution.id: t for t in await repository.download_targets(session, principal, files)}
    for distribution_id in files:
        single = await repository.download_target(session, principal, distribution_id)
        listed = batch.get(distribution_id)
        assert (single is None) == (listed is None), (principal, distribution_id)
        if single is not None:
            assert single.distribution.file_name == listed.distribution.file_name
            assert single.distribution.sha256 == listed.distribution.sha256
            assert (single.custodian_id, single.custodian_slug) == (listed.custodian_id, listed.custodian_slug)
    return set(batch)


def _people(consortium):
    return [
        consortium.member("lowlands", "bob"),  # the recipient institution
        consortium.member("lowlands", "sue", Role.steward),
        consortium.member("leiden", "ann"),  # the provider's reader: no download without a role
        consortium.member("leiden", "sam", Role.steward),
        consortium.member("leiden", "sid", Role.submitter),
        consortium.member("stroma", "eve"),  # a third institution
        None,
    ]


@pytest.mark.parametrize(
    "terms",
    [
        {},
        {"covers_later_versions": True},
        {"status": AgreementStatus.revoked, "revoked_at": datetime.now(UTC)},
        {"status": AgreementStatus.expired},
        {"effective_on": TODAY + timedelta(days=1)},
        {"expires_on": TODAY},
    ],
)
async def test_the_one_statement_rule_agrees_with_the_policy_for_everyone(session, consortium, monkeypatch, terms):
    monkeypatch.setattr(agreements, "today", lambda: TODAY)
    await _agreement(session, consortium, **terms)
    leiden, accession = consortium.institutions["leiden"], consortium.datasets["leiden"].accession
    content = valid_dataset(batches=[], conditions=[access_setup.HMB], title="second version")
    await service.save_dataset(session, leiden, content, origin=consortium.node_id, accession=accession)
    second = await service.publish(session, leiden, accession)
    draft = await service.save_dataset(session, leiden, content, origin=consortium.node_id, accession=accession)
    versions = [*(v.id for v in consortium.versions.values()), second.id, draft.id]
    verdicts, downloadable = [], []
    for principal in _people(consortium):
        expected = await _two_step(session, principal) & set(versions)
        assert await _one_statement(session, principal, versions) == expected, principal
        verdicts.append(expected)
        downloadable.append(await _single_and_batch_agree(session, principal, versions))
    assert any(verdicts) and not all(verdicts)  # the cases differ: the comparison could fail
    assert any(downloadable) and not all(downloadable)
