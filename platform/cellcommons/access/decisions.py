"""Custodian decisions and the agreements they create: approve (with terms), reject, revoke, and the daily sweep.

Each custodian decides its own share of a request once. An approval is refused while the matcher finds the
request incompatible with one of that custodian's datasets, and refused for a recipient outside the EEA
without a transfer mechanism (DOMAIN.md rule 12; the table's CHECK says the same). The request's status
follows its decisions and agreements: in_review while custodians are still to decide, then rejected, approved
(agreement not in force yet) or active; expired or revoked once none of its agreements is in force any more.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.access import notifications, repository
from cellcommons.access.agreements import in_force, today
from cellcommons.access.matcher import Compatibility, Condition, combine, match
from cellcommons.access.models import (
    AccessDecision,
    AccessRequest,
    Agreement,
    AgreementDataset,
    AgreementStatus,
    DecisionOutcome,
    NotificationKind,
    RequestStatus,
    TransferMechanism,
)
from cellcommons.access.policy import Action, AgreementRecord, require
from cellcommons.access.regions import EEA_COUNTRIES
from cellcommons.access.requests import SYSTEM, load_for_custodian, record_transition, requester_of
from cellcommons.access.schemas import ColumnTreatment, TermsIn, error, purpose_of
from cellcommons.access.visibility import get_visible
from cellcommons.audit import service as audit
from cellcommons.auth.principal import Principal
from cellcommons.background import periodically
from cellcommons.catalogue.enums import Sensitivity, TransferBasis
from cellcommons.catalogue.models import Institution
from cellcommons.db import Database
from cellcommons.errors import Conflict, ValidationFailed

EXPIRY_WARNING = timedelta(days=30)
SWEEP_EVERY = timedelta(hours=1)  # how often the scheduler sweeps agreements
_DECIDABLE = {RequestStatus.submitted, RequestStatus.in_review}
_MECHANISM_FROM_BASIS = {TransferBasis.adequacy: TransferMechanism.adequacy, TransferBasis.scc: TransferMechanism.scc}


async def approve(
    session: AsyncSession, principal: Principal, request_id: uuid.UUID, terms: TermsIn, *, on: date | None = None
) -> Agreement:
    on = on or today()
    request = await _decidable(session, principal, request_id)
    ours = [p for p in await repository.requested_datasets(session, request.id)
            if p.provider_institution_id == principal.institution_id]  # fmt: skip
    await _refuse_incompatible(session, principal, request, [p.dataset_id for p in ours])
    recipient = await session.get_one(Institution, request.requester_institution_id)
    effective_on = terms.effective_on or max(request.period_start, on)
    expires_on = terms.expires_on or request.period_end
    mechanism = _checked_terms(terms, recipient, effective_on, expires_on, on)
    agreement = Agreement(
        request_id=request.id, provider_institution_id=principal.institution_id,
        recipient_institution_id=recipient.id, recipient_subject=request.requester_subject,
        recipient_country=recipient.country, purpose=_purpose_terms(request), status=AgreementStatus.active,
        approved_at=datetime.now(UTC), effective_on=effective_on, expires_on=expires_on,
        transfer_mechanism=mechanism, onward_transfer=terms.onward_transfer,
        publication_terms=terms.publication_terms, end_of_term=terms.end_of_term,
        export_policy={tag.value: treatment.value for tag, treatment in terms.export_policy.items()},
        covers_later_versions=terms.covers_later_versions, document_reference=terms.document_reference,
    )  # fmt: skip
    session.add(agreement)
    await session.flush()
    session.add_all(AgreementDataset(agreement_id=agreement.id, dataset_id=p.dataset_id) for p in ours)
    await _decide(session, principal, request, DecisionOutcome.approved, None, on)
    await audit.append(
        session, actor=principal.actor, institution=principal.institution_slug, action="access.agreement_created",
        target=f"data_use_agreement:{agreement.id}",
        details={"request": str(request.id), "datasets": [str(p.dataset_id) for p in ours],
                 "effective_on": effective_on.isoformat(), "expires_on": expires_on.isoformat(),
                 "transfer_mechanism": mechanism.value if mechanism else None},
    )  # fmt: skip
    return agreement


async def reject(
    session: AsyncSession, principal: Principal, request_id: uuid.UUID, reason: str, *, on: date | None = None
) -> AccessRequest:
    request = await _decidable(session, principal, request_id)
    await _decide(session, principal, request, DecisionOutcome.rejected, reason, on or today())
    return request


async def revoke(
    session: AsyncSession, principal: Principal, agreement_id: uuid.UUID, reason: str, *, on: date | None = None
) -> Agreement:
    """Stop an agreement at once: no new URLs or exports from this moment (coverage checks `revoked_at`)."""
    on = on or today()
    agreement = await get_visible(session, principal, Agreement, agreement_id)
    require(principal, Action.set_dua_terms, _record(agreement))
    if agreement.status is not AgreementStatus.active:
        raise Conflict(f"a {agreement.status.value} agreement cannot be revoked", field="id")
    if agreement.expires_on <= on:  # ended, though the sweep has not marked it expired yet
        raise Conflict(f"the agreement expired on {agreement.expires_on}; an expired one cannot be revoked", field="id")
    agreement.status, agreement.revoked_at = AgreementStatus.revoked, datetime.now(UTC)
    agreement.revoked_by, agreement.revocation_reason = principal.actor, reason
    await session.flush()
    await notifications.notify(
        session, NotificationKind.agreement_revoked, agreement.recipient_institution_id,
        f"data-use agreement {agreement.id} was revoked: {reason}", subject=agreement.recipient_subject,
        agreement_id=agreement.id, request_id=agreement.request_id,
    )  # fmt: skip
    await _settle_and_record(session, principal, agreement, "agreement_revoked", reason, on)
    await audit.append(
        session, actor=principal.actor, institution=principal.institution_slug, action="access.agreement_revoked",
        target=f"data_use_agreement:{agreement.id}", details={"reason": reason},
    )  # fmt: skip
    return agreement


async def sweep_agreements(session: AsyncSession, on: date | None = None) -> tuple[int, int]:
    """Mark agreements past their term expired, move approved requests whose agreement has taken effect to active,
    and warn recipients once of agreements ending within 30 days. Returns (expired, warned). Coverage never waits
    for this: `agreements.in_force` checks the dates itself."""
    on = on or today()
    await _start_agreements(session, on)
    active = select(Agreement).where(Agreement.status == AgreementStatus.active)
    ended = list(await session.scalars(active.where(Agreement.expires_on <= on)))
    for agreement in ended:
        agreement.status = AgreementStatus.expired
        await session.flush()
        await _settle_and_record(session, None, agreement, "agreement_expired", None, on)
        await audit.append(
            session, actor=SYSTEM, action="access.agreement_expired", target=f"data_use_agreement:{agreement.id}",
            details={"expires_on": agreement.expires_on.isoformat()},
        )  # fmt: skip
    ending = await session.scalars(active.where(Agreement.expires_on <= on + EXPIRY_WARNING))
    warned = [a for a in ending if await notifications.warn_expiring(session, a)]
    return len(ended), len(warned)


async def keep_agreements_current(database: Database, stop: asyncio.Event, every: timedelta = SWEEP_EVERY) -> None:
    """The sweep now and then every `every` until `stop` is set (a scheduler duty): a term ending at midnight
    reads expired within the hour, and recipients are warned once."""

    async def sweep() -> str:
        async with database.unit_of_work() as session:
            expired, warned = await sweep_agreements(session)
        return f"{expired} agreements expired, {warned} recipients warned of an agreement ending within 30 days"

    await periodically(sweep, every, stop, "agreement sweep")


# ---- steps ----------------------------------------------------------------------------------------------------


async def _start_agreements(session: AsyncSession, on: date) -> None:
    """An approval with a later effective date leaves its request approved; the day the term begins it is active."""
    started = select(Agreement.request_id).where(in_force(on))
    query = select(AccessRequest).where(AccessRequest.status == RequestStatus.approved, AccessRequest.id.in_(started))
    for request in list(await session.scalars(query)):
        before = request.status
        await _settle(session, request, on)
        await record_transition(session, None, request, "agreement_started", before)


async def _decidable(session: AsyncSession, principal: Principal, request_id: uuid.UUID) -> AccessRequest:
    request = await load_for_custodian(session, principal, request_id)
    # Decisions on one request take turns: a second one (the same custodian's twice, or another custodian's
    # settling the status) waits here for the first to commit, then reads its outcome instead of racing it.
    await session.refresh(request, with_for_update=True)
    if request.status not in _DECIDABLE:
        raise Conflict(f"a {request.status.value} request cannot be decided", field="id")
    decided = {d.provider_institution_id for d in await repository.decisions(session, request.id)}
    if principal.institution_id in decided:
        raise Conflict(f"{principal.institution_slug} has decided on this request already", field="id")
    return request


async def _refuse_incompatible(
    session: AsyncSession, principal: Principal, request: AccessRequest, dataset_ids: list[uuid.UUID]
) -> None:
    """Judged again at approval: the datasets or the requester's institution record may have changed."""
    found = await repository.requestable_versions(session, principal, dataset_ids)
    conditions = await repository.conditions_of(session, [version.id for _, version in found.values()])
    purpose = purpose_of(request.purpose_terms, request.disease, request.methods_development, request.commercial_use)
    requester = await requester_of(
        session, request.requester_institution_id, request.requester_subject, request.orcid, request.orcid_verified
    )
    verdict = combine(
        match([Condition(c.term, c.parameter) for c in conditions[version.id]], purpose, requester)
        for _, version in found.values()
    )
    if verdict.compatibility is Compatibility.incompatible:
        reasons = "; ".join(f"{n.shorthand}: {n.message}" for n in verdict.reasons)
        raise ValidationFailed([error("request_incompatible", "id", f"the request breaks the conditions: {reasons}")])


def _checked_terms(
    terms: TermsIn, recipient: Institution, effective_on: date, expires_on: date, on: date
) -> TransferMechanism | None:
    """Every problem with the terms at once; returns the transfer mechanism that applies."""
    findings = []
    if expires_on <= on:  # the default comes from the request's period, which may have ended while it waited
        message = f"the agreement would expire on {expires_on}, not after today ({on}): name a later expiry"
        findings.append(error("term_ended", "terms.expires_on", message))
    elif expires_on <= effective_on:
        findings.append(error("term_order", "terms.expires_on", "the agreement must expire after it takes effect"))
    if terms.export_policy.get(Sensitivity.direct_identifier, ColumnTreatment.drop) is not ColumnTreatment.drop:
        message = "direct identifiers are never exported; their treatment must be drop"
        findings.append(error("export_direct_identifier", "terms.export_policy.direct_identifier", message))
    in_eea = recipient.country in EEA_COUNTRIES
    mechanism = terms.transfer_mechanism or (
        TransferMechanism.intra_eea if in_eea else _MECHANISM_FROM_BASIS.get(recipient.transfer_basis)
    )
    if not in_eea and mechanism in (None, TransferMechanism.intra_eea):
        message = (
            f"the recipient {recipient.slug} is in {recipient.country}, outside the EEA: name a transfer mechanism "
            "(adequacy or scc) before the agreement can take effect"
        )
        findings.append(error("transfer_mechanism_required", "terms.transfer_mechanism", message))
    if in_eea and mechanism is not TransferMechanism.intra_eea:
        message = f"the recipient {recipient.slug} is in the EEA ({recipient.country}): the mechanism is intra_eea"
        findings.append(error("transfer_mechanism_mismatch", "terms.transfer_mechanism", message))
    if findings:
        raise ValidationFailed(findings)
    return mechanism


async def _decide(
    session: AsyncSession,
    principal: Principal,
    request: AccessRequest,
    outcome: DecisionOutcome,
    reason: str | None,
    on: date,
) -> None:
    session.add(
        AccessDecision(
            request_id=request.id, provider_institution_id=principal.institution_id, outcome=outcome,
            decided_by=principal.actor, reason=reason,
        )
    )  # fmt: skip
    await session.flush()
    before = request.status
    await _settle(session, request, on)
    await record_transition(session, principal, request, outcome.value, before, reason)
    await notifications.notify(
        session, NotificationKind.decision, request.requester_institution_id,
        f"{principal.institution_slug} {outcome.value} your access request" + (f": {reason}" if reason else ""),
        subject=request.requester_subject, request_id=request.id,
    )  # fmt: skip


async def _settle(session: AsyncSession, request: AccessRequest, on: date) -> None:
    """The request's status from its decisions and agreements."""
    parts = await repository.requested_datasets(session, request.id)
    decisions = await repository.decisions(session, request.id)
    agreements = await repository.agreements_of_request(session, request.id)
    if len(decisions) < len({p.provider_institution_id for p in parts}):
        request.status = RequestStatus.in_review
    elif not agreements:
        request.status = RequestStatus.rejected
    elif current := [a for a in agreements if a.status is AgreementStatus.active and a.expires_on > on]:
        started = any(a.effective_on <= on for a in current)
        request.status = RequestStatus.active if started else RequestStatus.approved
    elif any(a.status is AgreementStatus.expired or a.status is AgreementStatus.active for a in agreements):
        # An active agreement past its term has ended though the sweep has not marked it yet: expired.
        request.status = RequestStatus.expired
    else:
        request.status = RequestStatus.revoked
    await session.flush()


async def _settle_and_record(
    session: AsyncSession, principal: Principal | None, agreement: Agreement, action: str, why: str | None, on: date
) -> None:
    request = await session.get_one(AccessRequest, agreement.request_id)
    before = request.status
    await _settle(session, request, on)
    await record_transition(session, principal, request, action, before, why)


def _record(agreement: Agreement) -> AgreementRecord:
    return AgreementRecord(
        institution_id=agreement.provider_institution_id, key=agreement.id,
        recipient_institution_id=agreement.recipient_institution_id,
    )  # fmt: skip


def _purpose_terms(request: AccessRequest) -> dict:
    return {
        "terms": list(request.purpose_terms), "disease": request.disease, "lay_summary": request.lay_summary,
        "project": request.project, "methods_development": request.methods_development,
        "commercial_use": request.commercial_use, "ethics_reference": request.ethics_reference,
    }  # fmt: skip
