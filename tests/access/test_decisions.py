"""Request → match → decide → agreement → coverage, through the services on the real PostgreSQL (rolled back)."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select
from tests.access.conftest import build_consortium, publish_dataset

from cellcommons.access import decisions, repository, requests
from cellcommons.access.agreements import covered_dataset_versions, today
from cellcommons.access.models import (
    AccessDecision,
    AccessRequest,
    Agreement,
    AgreementStatus,
    Notification,
    NotificationKind,
    RequestStatus,
    TransferMechanism,
)
from cellcommons.access.schemas import TermsIn
from cellcommons.access.visibility import downloadable_dataset_versions
from cellcommons.audit.models import AuditEvent
from cellcommons.auth.principal import Role
from cellcommons.catalogue.models import Dataset, DatasetVersion
from cellcommons.catalogue.schemas import DataUseConditionIn
from cellcommons.db import Database
from cellcommons.errors import Conflict, Forbidden, NotFound, ValidationFailed

TODAY = date(2026, 9, 1)
HMB = "DUO:0000006"


def request_input(*datasets, **changes) -> dict:
    return {
        "datasets": [d.id for d in datasets], "purpose_terms": [HMB], "commercial_use": False,
        "lay_summary": "Potency markers of BM-MSC after thaw", "ethics_reference": "METC-2026-117",
        "period_start": TODAY, "period_end": TODAY + timedelta(days=365), **changes,
    }  # fmt: skip


async def submitted(session, principal, *datasets, **changes):
    parsed = requests.parse_request(request_input(*datasets, **changes))
    request = await requests.create_request(session, principal, parsed, node_id=datasets[0].origin_node)  # local
    return await requests.submit(session, principal, request.id, node_id=datasets[0].origin_node)


@pytest.fixture
def people(consortium):
    return {
        "bob": consortium.member("lowlands", "bob"),
        "leiden steward": consortium.member("leiden", "lea", Role.steward),
        "lowlands steward": consortium.member("lowlands", "lou", Role.steward),
        "carol": consortium.member("maple", "carol"),
        "dave": consortium.member("stroma", "dave"),
        "leiden reader": consortium.member("leiden", "len"),
    }


async def test_request_match_approve_grants_the_dataset_versions(session, consortium, people):
    bob, steward = people["bob"], people["leiden steward"]
    leiden = consortium.datasets["leiden"]
    request = await submitted(session, bob, leiden)
    assert request.status is RequestStatus.submitted
    [part] = await repository.requested_datasets(session, request.id)
    assert part.verdict == {"compatibility": "compatible", "reasons": [], "obligations": []}
    queue = list(await session.scalars(repository.steward_queue_query(steward)))
    assert [r.id for r in queue] == [request.id]
    assert list(await session.scalars(repository.steward_queue_query(people["lowlands steward"]))) == []

    agreement = await decisions.approve(session, steward, request.id, TermsIn(), on=TODAY)
    assert agreement.status is AgreementStatus.active
    assert agreement.transfer_mechanism is TransferMechanism.intra_eea
    assert (agreement.effective_on, agreement.expires_on) == (TODAY, TODAY + timedelta(days=365))
    assert agreement.export_policy["direct_identifier"] == "drop"
    assert request.status is RequestStatus.active
    covered = await covered_dataset_versions(session, bob, on=TODAY)
    assert covered == {consortium.versions["leiden"].id}
    downloadable = set(
        await session.scalars(select(DatasetVersion.id).where(downloadable_dataset_versions(bob, covered)))
    )
    assert downloadable == {consortium.versions["leiden"].id}
    assert list(await session.scalars(repository.steward_queue_query(steward))) == []

    history = await repository.history(session, request.id)
    assert [(e.action, e.actor, e.to_status) for e in history] == [
        ("created", "user:bob", RequestStatus.draft),
        ("submitted", "user:bob", RequestStatus.submitted),
        ("approved", "user:lea", RequestStatus.active),
    ]
    actions = set(await session.scalars(select(AuditEvent.action).where(AuditEvent.target.contains(str(request.id)))))
    assert {"access.request_created", "access.request_submitted", "access.request_approved"} <= actions
    kinds = [
        (n.kind, n.institution_id)
        for n in await session.scalars(select(Notification).order_by(Notification.created_at))
    ]
    assert (NotificationKind.new_request, consortium.institutions["leiden"].id) in kinds
    assert (NotificationKind.decision, consortium.institutions["lowlands"].id) in kinds


async def test_a_steward_of_another_institution_cannot_decide_and_sees_it_as_missing(session, consortium, people):
    request = await submitted(session, people["bob"], consortium.datasets["leiden"])
    for outsider in (people["lowlands steward"], consortium.member("stroma", "sam", Role.steward)):
        if outsider.institution_id == request.requester_institution_id:
            # The requester's own institution's steward: still not the custodian.
            with pytest.raises(NotFound):
                await decisions.approve(
                    session, consortium.member("lowlands", "lou", Role.steward), request.id, TermsIn()
                )
            continue
        with pytest.raises(NotFound) as missing:
            await decisions.approve(session, outsider, request.id, TermsIn())
        assert missing.value.as_dict() == {
            "code": "not_found",
            "message": f"no access request {request.id}",
            "field": "id",
        }
        with pytest.raises(NotFound):
            await decisions.reject(session, outsider, request.id, "no")
    # A reader of the custodian may see nothing of it either; the requester sees it but may not decide.
    with pytest.raises(NotFound):
        await decisions.approve(session, people["leiden reader"], request.id, TermsIn())
    with pytest.raises(Forbidden):
        await decisions.approve(session, consortium.member("lowlands", "bob", Role.steward), request.id, TermsIn())
    assert await session.scalar(select(func.count()).select_from(AccessDecision)) == 0


async def test_non_public_data_cannot_be_requested_by_any_id(session, consortium, people):
    secret = await publish_dataset(
        session, consortium.institutions["leiden"], consortium.node_id, access_rights="non_public"
    )
    raw = request_input(consortium.datasets["lowlands"], consortium.datasets["leiden"])
    raw["datasets"].append(secret.dataset_id)
    with pytest.raises(NotFound) as missing:
        await requests.create_request(session, people["bob"], requests.parse_request(raw), node_id=consortium.node_id)
    assert missing.value.field == "datasets[2]"
    assert missing.value.message == f"no dataset {secret.dataset_id}"


async def test_the_transfer_gate_refuses_an_agreement_for_a_canadian_recipient_without_a_mechanism(
    session, consortium, people
):
    request = await submitted(session, people["carol"], consortium.datasets["leiden"])
    steward = people["leiden steward"]
    with pytest.raises(ValidationFailed) as refused:
        await decisions.approve(session, steward, request.id, TermsIn(), on=TODAY)
    [finding] = refused.value.findings
    assert (finding.code, finding.field) == ("transfer_mechanism_required", "terms.transfer_mechanism")
    assert "maple-ccrm is in CA" in finding.message
    with pytest.raises(ValidationFailed):
        await decisions.approve(session, steward, request.id, TermsIn(transfer_mechanism="intra_eea"), on=TODAY)
    assert await session.scalar(select(func.count()).select_from(Agreement)) == 0
    assert await covered_dataset_versions(session, people["carol"], on=TODAY) == set()
    assert request.status is RequestStatus.submitted

    agreement = await decisions.approve(session, steward, request.id, TermsIn(transfer_mechanism="scc"), on=TODAY)
    assert (agreement.status, agreement.recipient_country) == (AgreementStatus.active, "CA")
    assert await covered_dataset_versions(session, people["carol"], on=TODAY) == {consortium.versions["leiden"].id}


async def test_expiry_stops_coverage_at_once_and_the_sweep_warns_once_then_expires(session, consortium, people):
    bob = people["bob"]
    request = await submitted(session, bob, consortium.datasets["leiden"])
    end = TODAY + timedelta(days=60)
    agreement = await decisions.approve(
        session, people["leiden steward"], request.id, TermsIn(expires_on=end), on=TODAY
    )
    assert await decisions.sweep_agreements(session, TODAY) == (0, 0)
    assert await decisions.sweep_agreements(session, end - timedelta(days=30)) == (0, 1)
    assert await decisions.sweep_agreements(session, end - timedelta(days=29)) == (0, 0)  # told once
    assert await covered_dataset_versions(session, bob, on=end - timedelta(days=1)) != set()
    assert await covered_dataset_versions(session, bob, on=end) == set()  # before any sweep ran
    assert await decisions.sweep_agreements(session, end) == (1, 0)
    assert agreement.status is AgreementStatus.expired and request.status is RequestStatus.expired
    warning = await session.scalar(select(Notification).where(Notification.kind == NotificationKind.agreement_expiring))
    assert (warning.subject, warning.agreement_id) == ("bob", agreement.id)
    assert [e.action for e in await repository.history(session, request.id)][-1] == "agreement_expired"


async def test_revocation_stops_coverage_at_once(session, consortium, people):
    bob = people["bob"]
    request = await submitted(session, bob, consortium.datasets["leiden"])
    agreement = await decisions.approve(session, people["leiden steward"], request.id, TermsIn(), on=TODAY)
    with pytest.raises(Forbidden):  # the recipient's steward sees the agreement but cannot revoke it
        await decisions.revoke(session, people["lowlands steward"], agreement.id, "mine")
    with pytest.raises(NotFound):
        await decisions.revoke(session, consortium.member("stroma", "sam", Role.steward), agreement.id, "no")
    await decisions.revoke(session, people["leiden steward"], agreement.id, "ethics approval withdrawn", on=TODAY)
    assert await covered_dataset_versions(session, bob, on=TODAY) == set()
    assert (agreement.status, request.status) == (AgreementStatus.revoked, RequestStatus.revoked)
    with pytest.raises(Conflict):
        await decisions.revoke(session, people["leiden steward"], agreement.id, "again")


async def test_a_request_spanning_two_custodians_is_decided_by_each(session, consortium, people):
    dave = people["dave"]
    request = await submitted(session, dave, consortium.datasets["leiden"], consortium.datasets["lowlands"])
    await decisions.approve(session, people["leiden steward"], request.id, TermsIn(), on=TODAY)
    assert request.status is RequestStatus.in_review
    with pytest.raises(Conflict):
        await decisions.reject(session, people["leiden steward"], request.id, "changed my mind")
    await decisions.reject(session, people["lowlands steward"], request.id, "no capacity for onboarding", on=TODAY)
    assert request.status is RequestStatus.active
    assert await covered_dataset_versions(session, dave, on=TODAY) == {consortium.versions["leiden"].id}
    reasons = {d.outcome.value: d.reason for d in await repository.decisions(session, request.id)}
    assert reasons == {"approved": None, "rejected": "no capacity for onboarding"}


async def test_a_copy_harvested_from_another_node_is_requested_at_its_origin(session, consortium, people):
    copy = await publish_dataset(session, consortium.institutions["leiden"], "peer-node")
    copy_dataset = await session.get_one(Dataset, copy.dataset_id)
    raw = request_input(consortium.datasets["lowlands"], copy_dataset)
    for attempt in (requests.create_request, requests.preview):
        with pytest.raises(Forbidden) as refused:
            await attempt(session, people["bob"], requests.parse_request(raw), node_id=consortium.node_id)
        assert refused.value.field == "datasets[1]"
        assert "harvested from node peer-node; request access there" in refused.value.message
    assert await session.scalar(select(func.count()).select_from(AccessRequest)) == 0


async def test_clarification_sends_it_back_to_draft_until_resubmitted(session, consortium, people):
    bob, steward = people["bob"], people["leiden steward"]
    request = await submitted(session, bob, consortium.datasets["leiden"])
    await requests.ask_clarification(session, steward, request.id, "Which lots will you analyse?")
    assert request.status is RequestStatus.draft
    with pytest.raises(NotFound):  # a draft is the requester's own again
        await decisions.approve(session, steward, request.id, TermsIn())
    note = await session.scalar(select(Notification).where(Notification.kind == NotificationKind.clarification))
    assert (note.subject, note.message) == ("bob", "leiden-scgt asks: Which lots will you analyse?")
    changed = requests.parse_request(request_input(consortium.datasets["leiden"], project="lots LDN-BM-24-017"))
    await requests.update_request(session, bob, request.id, changed, node_id=consortium.node_id)
    await requests.submit(session, bob, request.id, node_id=consortium.node_id)
    await decisions.reject(session, steward, request.id, "out of scope", on=TODAY)
    assert request.status is RequestStatus.rejected
    with pytest.raises(Conflict):
        await requests.withdraw(session, bob, request.id, "too late")
    actions = [e.action for e in await repository.history(session, request.id)]
    assert actions == ["created", "submitted", "clarification_asked", "edited", "submitted", "rejected"]


async def test_an_incompatible_request_is_flagged_and_cannot_be_approved(session, consortium, people):
    npu = await publish_dataset(
        session, consortium.institutions["leiden"], consortium.node_id,
        conditions=[DataUseConditionIn(term=HMB), DataUseConditionIn(term="DUO:0000045")],
    )  # fmt: skip
    request = await submitted(session, people["dave"], await session.get_one(Dataset, npu.dataset_id))
    [part] = await repository.requested_datasets(session, request.id)
    assert part.verdict["compatibility"] == "incompatible"
    assert part.verdict["reasons"][0]["shorthand"] == "NPU"
    with pytest.raises(ValidationFailed) as refused:
        await decisions.approve(session, people["leiden steward"], request.id, TermsIn(), on=TODAY)
    assert refused.value.findings[0].code == "request_incompatible"


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"purpose_terms": ["DUO:0000007"]}, "disease"), ({"disease": "MONDO:0005147"}, "disease"),
     ({"purpose_terms": ["DUO:0000004"]}, "purpose_terms[0]"),
     ({"purpose_terms": [HMB, "DUO:0000042"]}, "purpose_terms"),
     ({"period_end": TODAY}, "period_end"), ({"datasets": []}, "datasets"), ({"orcid": "12"}, "orcid")],
)  # fmt: skip
async def test_a_bad_request_names_the_field_and_writes_nothing(session, consortium, people, changes, field):
    with pytest.raises(ValidationFailed) as refused:
        requests.parse_request(request_input(consortium.datasets["leiden"], **changes))
    assert refused.value.findings[0].field == field


async def test_withdrawal_before_any_decision(session, consortium, people):
    request = await submitted(session, people["bob"], consortium.datasets["leiden"])
    with pytest.raises(NotFound):  # someone else's request is missing to them
        await requests.withdraw(session, people["dave"], request.id, "mine now")
    await requests.withdraw(session, people["bob"], request.id, "need to rethink the design")
    assert request.status is RequestStatus.draft
    [part] = await repository.requested_datasets(session, request.id)
    assert part.verdict is None


@pytest.mark.parametrize("expires_on", [date(2020, 6, 1), TODAY])
async def test_an_agreement_whose_term_has_ended_is_refused_naming_its_expiry(session, consortium, people, expires_on):
    request = await submitted(session, people["bob"], consortium.datasets["leiden"])
    terms = TermsIn(effective_on=date(2020, 1, 1), expires_on=expires_on)
    with pytest.raises(ValidationFailed) as refused:
        await decisions.approve(session, people["leiden steward"], request.id, terms, on=TODAY)
    [finding] = refused.value.findings
    assert (finding.code, finding.field) == ("term_ended", "terms.expires_on")
    assert f"not after today ({TODAY})" in finding.message
    assert await session.scalar(select(func.count()).select_from(Agreement)) == 0
    assert request.status is RequestStatus.submitted


async def test_a_request_whose_agreement_ended_before_the_sweep_reads_expired_not_revoked(session, consortium, people):
    request = await submitted(session, people["dave"], consortium.datasets["leiden"], consortium.datasets["lowlands"])
    end = TODAY + timedelta(days=10)
    await decisions.approve(session, people["leiden steward"], request.id, TermsIn(expires_on=end), on=TODAY)
    await decisions.reject(session, people["lowlands steward"], request.id, "no capacity", on=end + timedelta(days=1))
    assert request.status is RequestStatus.expired


async def test_the_sweep_makes_an_approved_request_active_once_its_agreement_takes_effect(session, consortium, people):
    request = await submitted(session, people["bob"], consortium.datasets["leiden"])
    start = TODAY + timedelta(days=10)
    terms = TermsIn(effective_on=start, expires_on=TODAY + timedelta(days=100))
    await decisions.approve(session, people["leiden steward"], request.id, terms, on=TODAY)
    assert request.status is RequestStatus.approved
    await decisions.sweep_agreements(session, start - timedelta(days=1))
    assert request.status is RequestStatus.approved
    await decisions.sweep_agreements(session, start)
    assert request.status is RequestStatus.active
    [*_, started] = await repository.history(session, request.id)
    assert (started.action, started.actor, started.from_status, started.to_status) == (
        "agreement_started",
        "system:access",
        RequestStatus.approved,
        RequestStatus.active,
    )


async def test_an_agreement_past_its_expiry_is_not_revoked_even_before_the_sweep(session, consortium, people):
    request = await submitted(session, people["bob"], consortium.datasets["leiden"])
    agreement = await decisions.approve(session, people["leiden steward"], request.id, TermsIn(), on=TODAY)
    after = agreement.expires_on + timedelta(days=3)
    with pytest.raises(Conflict) as refused:
        await decisions.revoke(session, people["leiden steward"], agreement.id, "late", on=after)
    assert refused.value.field == "id" and f"expired on {agreement.expires_on}" in refused.value.message
    assert (agreement.status, agreement.revoked_at) == (AgreementStatus.active, None)
    assert request.status is RequestStatus.active
    await decisions.sweep_agreements(session, after)
    assert (agreement.status, request.status) == (AgreementStatus.expired, RequestStatus.expired)


async def test_the_schedulers_sweep_duty_expires_an_ended_agreement_at_once_and_stops_when_told(fresh_settings):
    """The scheduler sweeps hourly (`sync.scheduler.scheduler_duties`), starting at once: an agreement whose term
    ended today reads expired, with its request, without anyone calling the sweep."""
    database, stop, node, on = Database(fresh_settings), asyncio.Event(), fresh_settings.node_id, today()
    try:
        async with database.unit_of_work() as session:
            consortium = await build_consortium(session, node)
            request = await submitted(session, consortium.member("lowlands", "bob"), consortium.datasets["leiden"],
                                      period_start=on - timedelta(days=10), period_end=on)  # fmt: skip
            steward = consortium.member("leiden", "lea", Role.steward)
            agreement = await decisions.approve(session, steward, request.id, TermsIn(), on=on - timedelta(days=10))
        duty = asyncio.create_task(decisions.keep_agreements_current(database, stop))
        for _ in range(100):
            async with database.unit_of_work() as session:
                status = await session.scalar(select(Agreement.status).where(Agreement.id == agreement.id))
            if status is AgreementStatus.expired:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(duty, timeout=10)
        async with database.unit_of_work() as session:
            assert (await session.get_one(Agreement, agreement.id)).status is AgreementStatus.expired
            assert (await session.get_one(AccessRequest, request.id)).status is RequestStatus.expired
    finally:
        await database.dispose()
