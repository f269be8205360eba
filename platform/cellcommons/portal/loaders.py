"""What the access pages show, loaded for one principal through the access and catalogue repositories (the
policy is inside their queries): requests with their parts, decisions, history and agreements; agreements with
their parties and datasets; notifications; the institution's own datasets for curation. Lists are batched: one
query per kind of part, not per row."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.access import models, repository
from cellcommons.access.agreements import is_in_force, today
from cellcommons.access.matcher import Verdict
from cellcommons.access.visibility import get_visible
from cellcommons.auth.principal import Principal, Role
from cellcommons.catalogue import reading
from cellcommons.catalogue.models import Dataset, Institution

LIST_SIZE = 50  # the newest this many; older ones stay reachable through GraphQL's paging


@dataclass(frozen=True)
class DatasetRef:
    accession: str
    title: str


@dataclass
class RequestPart:
    dataset: DatasetRef | None  # None: the requester can no longer see it
    custodian: str
    custodian_id: uuid.UUID
    verdict: Verdict | None


@dataclass
class RequestView:
    request: models.AccessRequest
    requester_institution: str
    parts: list[RequestPart] = field(default_factory=list)
    decisions: list[tuple[models.AccessDecision, str]] = field(default_factory=list)
    history: list[models.RequestEvent] = field(default_factory=list)
    agreements: list[models.Agreement] = field(default_factory=list)

    def awaits(self, principal: Principal) -> bool:
        """Whether the principal's institution still has to decide its share (as the steward queue says)."""
        ours = any(p.custodian_id == principal.institution_id for p in self.parts)
        decided = any(d.provider_institution_id == principal.institution_id for d, _ in self.decisions)
        open_ = self.request.status in (models.RequestStatus.submitted, models.RequestStatus.in_review)
        return principal.has(Role.steward) and ours and open_ and not decided


@dataclass
class AgreementView:
    agreement: models.Agreement
    provider: str
    recipient: str
    datasets: list[DatasetRef]

    @property
    def in_force(self) -> bool:
        return is_in_force(self.agreement)

    @property
    def days_left(self) -> int:
        return (self.agreement.expires_on - today()).days

    def expires_within(self, days: int) -> bool:
        return self.in_force and self.days_left <= days


async def _newest(session: AsyncSession, query: Select, model: type) -> list:
    page = await reading.keyset_page(session, query, model, reading.PageRequest(last=LIST_SIZE))
    return list(reversed(page.rows))


async def _institution_names(session: AsyncSession, principal: Principal, ids: set[uuid.UUID]) -> dict:
    return {k: i.name for k, i in (await reading.by_ids(session, principal, Institution, list(ids))).items()}


async def _dataset_refs(session: AsyncSession, principal: Principal, ids: set[uuid.UUID]) -> dict:
    datasets = await reading.by_ids(session, principal, Dataset, list(ids))
    versions = await reading.versions_of(session, principal, list(datasets))
    return {k: DatasetRef(d.accession, versions[k][-1].title) for k, d in datasets.items() if versions.get(k)}


async def _request_views(
    session: AsyncSession, principal: Principal, rows: list[models.AccessRequest], *, full: bool = False
) -> list[RequestView]:
    keys = [r.id for r in rows]
    parts = await repository.parts_of(session, models.RequestedDataset, "request_id", keys)
    decisions = await repository.parts_of(session, models.AccessDecision, "request_id", keys)
    history = await repository.parts_of(session, models.RequestEvent, "request_id", keys) if full else {}
    agreements = await repository.parts_of(session, models.Agreement, "request_id", keys) if full else {}
    every_part = [p for ps in parts.values() for p in ps]
    institutions = {r.requester_institution_id for r in rows} | {p.provider_institution_id for p in every_part}
    names = await _institution_names(session, principal, institutions)
    refs = await _dataset_refs(session, principal, {p.dataset_id for p in every_part})
    return [
        RequestView(
            request=r,
            requester_institution=names.get(r.requester_institution_id, "another institution"),
            parts=[
                RequestPart(
                    refs.get(p.dataset_id),
                    names.get(p.provider_institution_id, ""),
                    p.provider_institution_id,
                    Verdict.from_json(p.verdict) if p.verdict else None,
                )
                for p in parts.get(r.id, [])
            ],
            decisions=[(d, names.get(d.provider_institution_id, "")) for d in decisions.get(r.id, [])],
            history=history.get(r.id, []),
            agreements=agreements.get(r.id, []),
        )
        for r in rows
    ]


async def my_requests(session: AsyncSession, principal: Principal) -> list[RequestView]:
    rows = await _newest(session, repository.my_requests_query(principal), models.AccessRequest)
    return await _request_views(session, principal, rows)


async def steward_queue(session: AsyncSession, principal: Principal) -> list[RequestView]:
    rows = await _newest(session, repository.steward_queue_query(principal), models.AccessRequest)
    return await _request_views(session, principal, rows)


async def request_view(session: AsyncSession, principal: Principal, request_id: uuid.UUID) -> RequestView:
    """One request the principal made or decides on; NotFound alike for missing and hidden."""
    row = await get_visible(session, principal, models.AccessRequest, request_id)
    return (await _request_views(session, principal, [row], full=True))[0]


async def my_agreements(session: AsyncSession, principal: Principal) -> list[AgreementView]:
    rows = await _newest(session, repository.my_agreements_query(principal), models.Agreement)
    return await _agreement_views(session, principal, rows)


async def agreement_view(session: AsyncSession, principal: Principal, agreement_id: uuid.UUID) -> AgreementView:
    """One agreement the principal's institution is a party to; NotFound alike for missing and hidden."""
    row = await get_visible(session, principal, models.Agreement, agreement_id)
    return (await _agreement_views(session, principal, [row]))[0]


async def _agreement_views(
    session: AsyncSession, principal: Principal, rows: list[models.Agreement]
) -> list[AgreementView]:
    links = await repository.parts_of(session, models.AgreementDataset, "agreement_id", [a.id for a in rows])
    parties = {a.provider_institution_id for a in rows} | {a.recipient_institution_id for a in rows}
    names = await _institution_names(session, principal, parties)
    refs = await _dataset_refs(session, principal, {link.dataset_id for ls in links.values() for link in ls})
    return [
        AgreementView(
            a,
            names.get(a.provider_institution_id, ""),
            names.get(a.recipient_institution_id, ""),
            [refs[link.dataset_id] for link in links.get(a.id, []) if link.dataset_id in refs],
        )
        for a in rows
    ]


async def my_notifications(session: AsyncSession, principal: Principal) -> list[models.Notification]:
    return await _newest(session, repository.notifications_query(principal), models.Notification)


async def own_datasets(session: AsyncSession, principal: Principal) -> list[tuple[Dataset, object]]:
    """The institution's datasets, newest first, each with its latest version (a draft, if one is open)."""
    rows = await _newest(session, reading.own_datasets_query(principal), Dataset)
    versions = await reading.versions_of(session, principal, [d.id for d in rows])
    return [(d, versions[d.id][-1]) for d in rows if versions.get(d.id)]


def default_period(on: date | None = None) -> tuple[date, date]:
    """What the request form proposes: from today, for a year."""
    start = on or today()
    return start, start + timedelta(days=365)
