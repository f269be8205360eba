"""Access requests: draft, edit, submit (the matcher judges each dataset), withdraw, clarification.

Every transition is kept in the request's history (who, when, why) and appended to the audit log in the same
transaction; services flush, the caller commits. A request may name datasets of several custodians: each
decides its own (`decisions`). Withdrawal and clarification send a request back to draft, which is only possible
while no custodian has decided yet (an approval must not outlive the purpose it approved).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.access import notifications, repository
from cellcommons.access.matcher import Condition, Requester, Verdict, match
from cellcommons.access.models import AccessRequest, NotificationKind, RequestedDataset, RequestEvent, RequestStatus
from cellcommons.access.policy import AccessRequestRecord, Action, require
from cellcommons.access.schemas import RequestIn, purpose_findings, purpose_of
from cellcommons.access.visibility import get_visible
from cellcommons.audit import service as audit
from cellcommons.auth.principal import Principal
from cellcommons.catalogue.models import Dataset, DatasetVersion, Institution
from cellcommons.catalogue.service import parse
from cellcommons.errors import Conflict, Forbidden, InvalidInput, NotFound, ValidationFailed

SYSTEM = "system:access"
_PURPOSE_FIELDS = ("purpose_terms", "disease", "methods_development", "commercial_use", "lay_summary",
                   "ethics_reference", "project", "period_start", "period_end", "orcid")  # fmt: skip


def parse_request(raw: object) -> RequestIn:
    data = parse(RequestIn, raw)
    findings = purpose_findings(data)
    if findings:
        raise ValidationFailed(findings)
    return data


async def requester_of(
    session: AsyncSession, institution_id: uuid.UUID, subject: str, orcid: str | None, orcid_verified: bool
) -> Requester:
    """The requester as the matcher judges them: by their institution's record, not by what they claim."""
    institution = await session.get_one(Institution, institution_id)
    return Requester(
        subject=subject, institution_slug=institution.slug, country=institution.country,
        sector=institution.sector, ror_id=institution.ror_id, orcid=orcid, orcid_verified=orcid_verified,
    )  # fmt: skip


def stated_orcid(principal: Principal, typed: str | None) -> tuple[str | None, bool]:
    """The request's ORCID and whether the requester's institution vouches for it: the one its sign-in carries
    (also when the form leaves it out), else the one typed in, which a steward must confirm."""
    if principal.orcid is None:
        return typed, False
    if typed is not None and typed != principal.orcid:
        message = f"your institution's sign-in vouches for ORCID {principal.orcid}; state that one or none"
        raise InvalidInput(message, field="orcid")
    return principal.orcid, True


async def _requestable(
    session: AsyncSession, principal: Principal, dataset_ids: Sequence[uuid.UUID], node_id: str
) -> dict[uuid.UUID, tuple[Dataset, DatasetVersion]]:
    """The datasets, or NotFound naming the first that is missing, hidden or has nothing to request. A read-only
    copy harvested from another node (`node_id`: this one) is requested at its origin, whose stewards decide."""
    found = await repository.requestable_versions(session, principal, dataset_ids)
    for index, dataset_id in enumerate(dataset_ids):
        if dataset_id not in found:
            raise NotFound(f"no dataset {dataset_id}", field=f"datasets[{index}]")
        dataset = found[dataset_id][0]
        if dataset.origin_node != node_id:
            message = (f"dataset {dataset.accession} is a read-only copy harvested from node {dataset.origin_node}; "
                       "request access there, where its stewards decide")  # fmt: skip
            raise Forbidden(message, field=f"datasets[{index}]")
    return found


async def preview(
    session: AsyncSession, principal: Principal, data: RequestIn, *, node_id: str
) -> list[tuple[Dataset, DatasetVersion, Verdict]]:
    """The matcher's verdict on each dataset for this purpose and requester, without saving anything."""
    found = await _requestable(session, principal, data.datasets, node_id)
    versions = [found[d][1] for d in data.datasets]
    conditions = await repository.conditions_of(session, [v.id for v in versions])
    purpose = purpose_of(data.purpose_terms, data.disease, data.methods_development, data.commercial_use)
    requester = await requester_of(
        session, principal.institution_id, principal.subject, *stated_orcid(principal, data.orcid)
    )
    return [
        (found[d][0], found[d][1], match([Condition(c.term, c.parameter) for c in conditions[found[d][1].id]],
                                         purpose, requester))
        for d in data.datasets
    ]  # fmt: skip


async def create_request(
    session: AsyncSession, principal: Principal, data: RequestIn, *, node_id: str
) -> AccessRequest:
    orcid, verified = stated_orcid(principal, data.orcid)
    found = await _requestable(session, principal, data.datasets, node_id)
    request = AccessRequest(
        requester_institution_id=principal.institution_id,
        requester_subject=principal.subject,
        requester_actor=principal.actor,
        status=RequestStatus.draft,
        **{name: getattr(data, name) for name in _PURPOSE_FIELDS} | {"orcid": orcid, "orcid_verified": verified},
    )
    session.add(request)
    await session.flush()
    await _replace_datasets(session, request, data.datasets, found)
    await record_transition(session, principal, request, "created", None)
    return request


async def update_request(
    session: AsyncSession, principal: Principal, request_id: uuid.UUID, data: RequestIn, *, node_id: str
) -> AccessRequest:
    request = await load_for_requester(session, principal, request_id)
    _expect(request, {RequestStatus.draft}, "edited")
    orcid, verified = stated_orcid(principal, data.orcid)
    found = await _requestable(session, principal, data.datasets, node_id)
    for name in _PURPOSE_FIELDS:
        setattr(request, name, getattr(data, name))
    request.orcid, request.orcid_verified = orcid, verified
    await _replace_datasets(session, request, data.datasets, found)
    await record_transition(session, principal, request, "edited", request.status)
    return request


async def submit(session: AsyncSession, principal: Principal, request_id: uuid.UUID, *, node_id: str) -> AccessRequest:
    """Judge every dataset with the matcher (kept with the request) and tell each custodian's stewards."""
    request = await load_for_requester(session, principal, request_id)
    _expect(request, {RequestStatus.draft}, "submitted")
    request.orcid, request.orcid_verified = stated_orcid(principal, request.orcid)  # as the sign-in stands now
    parts = await repository.requested_datasets(session, request.id)
    data = parse_request(_as_input(request, [p.dataset_id for p in parts]))
    verdicts = await preview(session, principal, data, node_id=node_id)
    for part, (_, _, verdict) in zip(parts, verdicts, strict=True):
        part.verdict = verdict.as_json()
    await _transition(session, principal, request, RequestStatus.submitted, "submitted", None)
    for provider in dict.fromkeys(p.provider_institution_id for p in parts):
        await notifications.notify(
            session, NotificationKind.new_request, provider, f"new access request from {principal.institution_slug}",
            request_id=request.id,
        )  # fmt: skip
    return request


async def withdraw(session: AsyncSession, principal: Principal, request_id: uuid.UUID, reason: str) -> AccessRequest:
    request = await load_for_requester(session, principal, request_id)
    await _back_to_draft(session, principal, request, "withdrawn", reason)
    return request


async def ask_clarification(
    session: AsyncSession, principal: Principal, request_id: uuid.UUID, message: str
) -> AccessRequest:
    request = await load_for_custodian(session, principal, request_id)
    await _back_to_draft(session, principal, request, "clarification_asked", message)
    await notifications.notify(
        session, NotificationKind.clarification, request.requester_institution_id,
        f"{principal.institution_slug} asks: {message}", subject=request.requester_subject, request_id=request.id,
    )  # fmt: skip
    return request


async def _back_to_draft(
    session: AsyncSession, principal: Principal, request: AccessRequest, action: str, why: str
) -> None:
    await session.refresh(request, with_for_update=True)  # waits for a decision being made now (`decisions`)
    _expect(request, {RequestStatus.submitted}, action.replace("_", " "))
    if await repository.decisions(session, request.id):
        raise Conflict("a custodian has decided on this request already; it cannot go back to draft", field="id")
    for part in await repository.requested_datasets(session, request.id):
        part.verdict = None
    await _transition(session, principal, request, RequestStatus.draft, action, why)


# ---- loading under the policy -------------------------------------------------------------------------------


async def _record_of(session: AsyncSession, principal: Principal, request: AccessRequest) -> AccessRequestRecord:
    """The request as the policy sees it from the principal's side: its own custodian share when it has one."""
    providers = [p.provider_institution_id for p in await repository.requested_datasets(session, request.id)]
    custodian = principal.institution_id if principal.institution_id in providers else providers[0]
    return AccessRequestRecord(
        institution_id=custodian, key=request.id, requester_institution_id=request.requester_institution_id,
        requester_actor=request.requester_actor, submitted=request.status is not RequestStatus.draft,
    )  # fmt: skip


async def load(session: AsyncSession, principal: Principal | None, request_id: uuid.UUID) -> AccessRequest:
    return await get_visible(session, principal, AccessRequest, request_id)


async def load_for_requester(session: AsyncSession, principal: Principal, request_id: uuid.UUID) -> AccessRequest:
    request = await load(session, principal, request_id)
    require(principal, Action.update, await _record_of(session, principal, request))
    return request


async def load_for_custodian(session: AsyncSession, principal: Principal, request_id: uuid.UUID) -> AccessRequest:
    request = await load(session, principal, request_id)
    require(principal, Action.decide_access_request, await _record_of(session, principal, request))
    return request


# ---- history and transitions --------------------------------------------------------------------------------


def _expect(request: AccessRequest, allowed: set[RequestStatus], doing: str) -> None:
    if request.status not in allowed:
        raise Conflict(f"a {request.status.value} request cannot be {doing}", field="id")


async def _transition(
    session: AsyncSession, principal: Principal, request: AccessRequest, to: RequestStatus, action: str, why: str | None
) -> None:
    before = request.status
    request.status = to
    await record_transition(session, principal, request, action, before, why)


async def record_transition(
    session: AsyncSession,
    principal: Principal | None,
    request: AccessRequest,
    action: str,
    before: RequestStatus | None,
    why: str | None = None,
) -> None:
    """One history entry and one audit event for every change of a request; no principal: the system did it."""
    actor = principal.actor if principal else SYSTEM
    session.add(
        RequestEvent(
            request_id=request.id, actor=actor, actor_institution_id=principal.institution_id if principal else None,
            action=action, from_status=before, to_status=request.status, message=why,
        )
    )  # fmt: skip
    await session.flush()
    await audit.append(
        session, actor=actor, institution=principal.institution_slug if principal else None,
        action=f"access.request_{action}", target=f"access_request:{request.id}",
        details={"status": request.status.value},
    )  # fmt: skip


async def _replace_datasets(
    session: AsyncSession, request: AccessRequest, dataset_ids: Sequence[uuid.UUID], found: dict
) -> None:
    for part in await repository.requested_datasets(session, request.id):
        await session.delete(part)
    await session.flush()
    session.add_all(
        RequestedDataset(request_id=request.id, dataset_id=d, provider_institution_id=found[d][0].institution_id)
        for d in dataset_ids
    )
    await session.flush()


def _as_input(request: AccessRequest, dataset_ids: list[uuid.UUID]) -> dict:
    return {"datasets": dataset_ids, **{name: getattr(request, name) for name in _PURPOSE_FIELDS}}
