"""A requester's ORCID: vouched for by their institution's sign-in or typed in, and what each lets a US
condition decide (the services on the real PostgreSQL, rolled back)."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import func, select
from tests.access.conftest import publish_dataset
from tests.access.test_decisions import TODAY, request_input, submitted

from cellcommons.access import decisions, repository, requests
from cellcommons.access.models import AccessRequest
from cellcommons.access.schemas import TermsIn
from cellcommons.auth.principal import Role
from cellcommons.catalogue.models import Dataset
from cellcommons.catalogue.schemas import DataUseConditionIn
from cellcommons.errors import InvalidInput, ValidationFailed

HMB = "DUO:0000006"
ORCID, OTHER_ORCID = "0000-0002-1825-0097", "0000-0002-1694-233X"


async def named_user_dataset(session, consortium, *users: str) -> Dataset:
    """A Leiden dataset for health research by the named users only (DUO US)."""
    conditions = [DataUseConditionIn(term=HMB), DataUseConditionIn(term="DUO:0000026", users=list(users))]
    version = await publish_dataset(
        session, consortium.institutions["leiden"], consortium.node_id, conditions=conditions
    )
    return await session.get_one(Dataset, version.dataset_id)


@pytest.fixture
def people(consortium):
    return {
        "bob": consortium.member("lowlands", "bob"),
        "leiden steward": consortium.member("leiden", "lea", Role.steward),
    }


def vouched(principal, orcid=ORCID):
    return dataclasses.replace(principal, orcid=orcid)


async def test_an_orcid_the_sign_in_vouches_for_meets_a_us_condition_without_review(session, consortium, people):
    dataset = await named_user_dataset(session, consortium, ORCID)
    request = await submitted(session, vouched(people["bob"]), dataset)  # the form leaves the ORCID out
    assert (request.orcid, request.orcid_verified) == (ORCID, True)
    [part] = await repository.requested_datasets(session, request.id)
    assert part.verdict["compatibility"] == "compatible"
    await decisions.approve(session, people["leiden steward"], request.id, TermsIn(), on=TODAY)


async def test_a_typed_orcid_of_a_named_user_is_left_to_the_steward(session, consortium, people):
    dataset = await named_user_dataset(session, consortium, ORCID)
    request = await submitted(session, people["bob"], dataset, orcid=ORCID)
    assert (request.orcid, request.orcid_verified) == (ORCID, False)
    [part] = await repository.requested_datasets(session, request.id)
    assert part.verdict["compatibility"] == "needs_review"
    assert "confirm that lowlands-regmed:bob holds it" in part.verdict["obligations"][0]["message"]


async def test_an_orcid_other_than_the_one_vouched_for_is_refused_and_nothing_written(session, consortium, people):
    before = await session.scalar(select(func.count()).select_from(AccessRequest))
    parsed = requests.parse_request(request_input(consortium.datasets["leiden"], orcid=OTHER_ORCID))
    with pytest.raises(InvalidInput) as refused:
        await requests.create_request(session, vouched(people["bob"]), parsed, node_id=consortium.node_id)
    assert refused.value.field == "orcid" and ORCID in refused.value.message
    assert await session.scalar(select(func.count()).select_from(AccessRequest)) == before


async def test_an_orcid_typed_as_its_uri_is_kept_bare_and_a_typo_is_refused(consortium):
    parsed = requests.parse_request(request_input(consortium.datasets["leiden"], orcid=f"https://orcid.org/{ORCID}"))
    assert parsed.orcid == ORCID
    with pytest.raises(ValidationFailed) as refused:
        requests.parse_request(request_input(consortium.datasets["leiden"], orcid="0000-0002-1825-0079"))
    [finding] = refused.value.findings
    assert finding.field == "orcid" and "check" in finding.message
