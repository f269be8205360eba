"""Decisions racing in two transactions on a committed database of the test's own: the later one waits for the
earlier to commit (the request row is locked) and then reads its outcome."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date, timedelta

import pytest
from tests.access.conftest import build_consortium

from cellcommons.access import decisions, requests
from cellcommons.access.models import RequestStatus
from cellcommons.access.schemas import TermsIn
from cellcommons.auth.principal import Principal, Role
from cellcommons.db import Database
from cellcommons.errors import Conflict

TODAY = date(2026, 9, 1)


@dataclass
class Submitted:
    """A request by Stroma's dave for a dataset of Leiden and one of Lowlands, committed."""

    id: object
    dave: Principal
    leiden_steward: Principal
    lowlands_steward: Principal


@pytest.fixture
async def database(fresh_settings):
    database = Database(fresh_settings)
    yield database
    await database.dispose()


@pytest.fixture
async def submitted(database, fresh_settings) -> Submitted:
    node_id = fresh_settings.node_id
    async with database.unit_of_work() as session:
        consortium = await build_consortium(session, node_id)
        dave = consortium.member("stroma", "dave")
        datasets = [consortium.datasets[key].id for key in ("leiden", "lowlands")]
        raw = {
            "datasets": datasets, "purpose_terms": ["DUO:0000006"], "commercial_use": False,
            "lay_summary": "Potency markers of BM-MSC after thaw", "ethics_reference": "METC-2026-117",
            "period_start": TODAY, "period_end": TODAY + timedelta(days=365),
        }  # fmt: skip
        request = await requests.create_request(session, dave, requests.parse_request(raw), node_id=node_id)
        await requests.submit(session, dave, request.id, node_id=node_id)
    member = consortium.member
    return Submitted(request.id, dave, member("leiden", "lea", Role.steward), member("lowlands", "lou", Role.steward))


async def _racing(database, first_work, second_work):
    """`first_work` in a transaction; `second_work` started in another before the first commits. Returns the
    second's task, to await once the first has committed."""
    async with database.unit_of_work() as first:
        await first_work(first)

        async def second():
            async with database.unit_of_work() as session:
                await second_work(session)

        racing = asyncio.create_task(second())
        await asyncio.sleep(0.5)  # the second reaches the request while the first holds it
        assert not racing.done()
    return racing


async def _status(database, submitted):
    async with database.unit_of_work() as session:
        return (await requests.load(session, submitted.dave, submitted.id)).status


async def test_two_approvals_at_once_by_one_custodian_the_second_is_a_conflict(database, submitted):
    def approve(session):
        return decisions.approve(session, submitted.leiden_steward, submitted.id, TermsIn(), on=TODAY)

    racing = await _racing(database, approve, approve)
    with pytest.raises(Conflict) as refused:  # was a unique violation, answered as internal
        await racing
    assert refused.value.field == "id" and "leiden-scgt has decided" in refused.value.message
    assert await _status(database, submitted) is RequestStatus.in_review  # Lowlands is still to decide


async def test_two_custodians_deciding_at_once_leave_the_request_settled_on_both(database, submitted):
    racing = await _racing(
        database,
        lambda session: decisions.approve(session, submitted.leiden_steward, submitted.id, TermsIn(), on=TODAY),
        lambda session: decisions.reject(session, submitted.lowlands_steward, submitted.id, "no capacity", on=TODAY),
    )
    await racing
    assert await _status(database, submitted) is RequestStatus.active  # was in_review, the approval overlooked


async def test_a_withdrawal_racing_an_approval_is_a_conflict(database, submitted):
    racing = await _racing(
        database,
        lambda session: decisions.approve(session, submitted.leiden_steward, submitted.id, TermsIn(), on=TODAY),
        lambda session: requests.withdraw(session, submitted.dave, submitted.id, "changed my mind"),
    )
    with pytest.raises(Conflict):  # was a draft with an agreement in force
        await racing
    assert await _status(database, submitted) is RequestStatus.in_review
