"""GraphQL for access: requests (draft, submit, withdraw, clarification), the steward queue and decisions,
agreements, notifications and the matcher's verdict preview.

Every mutation is one transaction, committed when it succeeds and rolled back when it raises; domain errors reach
the client with `extensions.code` (and `field`). Nested fields load through per-request DataLoaders kept on the
context, and every query applies the policy in SQL (`access.repository`, `access.visibility`).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from functools import partial
from typing import Any

import strawberry
from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON

from cellcommons.access import decisions, matcher, models, repository, requests
from cellcommons.access.agreements import in_force, is_in_force, today
from cellcommons.access.schemas import TermsIn
from cellcommons.access.visibility import get_visible, visible_agreements
from cellcommons.catalogue import models as catalogue
from cellcommons.catalogue.service import parse
from cellcommons.errors import InvalidInput, NotFound
from cellcommons.graphql.connection import Connection, page_request, sql_connection
from cellcommons.graphql.types import Dataset, DatasetVersion, Institution, Node

RequestStatus = strawberry.enum(models.RequestStatus, name="AccessRequestStatus")
AgreementStatus = strawberry.enum(models.AgreementStatus)
TransferMechanism = strawberry.enum(models.TransferMechanism)
OnwardTransfer = strawberry.enum(models.OnwardTransfer)
EndOfTerm = strawberry.enum(models.EndOfTerm)
DecisionOutcome = strawberry.enum(models.DecisionOutcome)
NotificationKind = strawberry.enum(models.NotificationKind)
Compatibility = strawberry.enum(matcher.Compatibility)


# ---- per-request loaders ----------------------------------------------------------------------------------


class Loaders:
    """The access DataLoaders of one request, made on first use and kept on its context."""

    def __init__(self, context: Any):
        self.context = context
        self.parts = self._grouped(models.RequestedDataset, "request_id")
        self.decisions = self._grouped(models.AccessDecision, "request_id")
        self.history = self._grouped(models.RequestEvent, "request_id")
        self.agreements = self._grouped(models.Agreement, "request_id", visible_agreements(context.principal))
        self.agreement_datasets = self._grouped(models.AgreementDataset, "agreement_id")

    def _grouped(self, model: type, parent: str, visible: ColumnElement[bool] | None = None) -> DataLoader:
        async def load(keys: list[uuid.UUID]) -> list[list]:
            grouped = await self.context.read(repository.parts_of, model, parent, keys, visible)
            return [grouped.get(k, []) for k in keys]

        return DataLoader(load)


def loaders(info: strawberry.Info) -> Loaders:
    context = info.context
    if not hasattr(context, "access_loaders"):
        context.access_loaders = Loaders(context)
    return context.access_loaders


def _dataset(info: strawberry.Info, row: catalogue.Dataset | None) -> Dataset | None:
    return Dataset.of(row, info.context.settings.node_id) if row else None


# ---- output types -----------------------------------------------------------------------------------------


@strawberry.type(description="A reason (incompatible) or an obligation (needs review) about one DUO condition.")
class VerdictNote:
    term: str = strawberry.field(description="DUO CURIE of the condition")
    shorthand: str
    message: str


@strawberry.type(description="The DUO matcher's judgement of a purpose and requester against a dataset's conditions.")
class Verdict:
    compatibility: Compatibility
    reasons: list[VerdictNote]
    obligations: list[VerdictNote]

    @classmethod
    def of(cls, verdict: matcher.Verdict) -> Verdict:
        notes = lambda items: [VerdictNote(term=n.term, shorthand=n.shorthand, message=n.message) for n in items]  # noqa: E731
        return cls(
            compatibility=verdict.compatibility, reasons=notes(verdict.reasons), obligations=notes(verdict.obligations)
        )


@strawberry.type(description="A dataset named in a request, with the verdict made when the request was submitted.")
class RequestedDataset:
    row: strawberry.Private[models.RequestedDataset]

    @strawberry.field
    async def dataset(self, info: strawberry.Info) -> Dataset | None:
        return _dataset(info, await info.context.row(catalogue.Dataset, self.row.dataset_id))

    @strawberry.field(description="The custodian, who decides on this dataset")
    async def custodian(self, info: strawberry.Info) -> Institution | None:
        row = await info.context.row(catalogue.Institution, self.row.provider_institution_id)
        return Institution.of(row) if row else None

    @strawberry.field(description="Null while the request is a draft")
    def verdict(self) -> Verdict | None:
        return Verdict.of(matcher.Verdict.from_json(self.row.verdict)) if self.row.verdict else None


@strawberry.type(description="One custodian's decision on a request.")
class AccessDecision:
    outcome: DecisionOutcome
    decided_by: str
    reason: str | None
    decided_at: datetime
    custodian_id: strawberry.Private[uuid.UUID]

    @strawberry.field
    async def custodian(self, info: strawberry.Info) -> Institution | None:
        row = await info.context.row(catalogue.Institution, self.custodian_id)
        return Institution.of(row) if row else None


@strawberry.type(description="A step in a request's history: who did what, when and why.")
class AccessRequestEvent:
    action: str
    actor: str
    from_status: RequestStatus | None
    to_status: RequestStatus
    message: str | None
    at: datetime


@strawberry.type(description="A party to an agreement.")
class AgreementParty:
    role: str = strawberry.field(description="provider or recipient")
    institution: Institution | None


@strawberry.type(description="A data-use agreement: what the recipient may do with which datasets, until when.")
class Agreement(Node):
    row: strawberry.Private[models.Agreement]
    status: AgreementStatus
    effective_on: date
    expires_on: date
    transfer_mechanism: TransferMechanism | None
    no_reidentification: bool
    onward_transfer: OnwardTransfer
    publication_terms: str | None
    end_of_term: EndOfTerm
    export_policy: JSON = strawberry.field(description="Column sensitivity tag → drop, generalise, pseudonymise, keep")
    covers_later_versions: bool
    document_reference: str | None
    purpose: JSON
    approved_at: datetime
    revoked_at: datetime | None
    revocation_reason: str | None

    @classmethod
    def of(cls, row: models.Agreement) -> Agreement:
        return cls(
            row=row, status=row.status, effective_on=row.effective_on, expires_on=row.expires_on,
            transfer_mechanism=row.transfer_mechanism, no_reidentification=row.no_reidentification,
            onward_transfer=row.onward_transfer, publication_terms=row.publication_terms, end_of_term=row.end_of_term,
            export_policy=row.export_policy, covers_later_versions=row.covers_later_versions,
            document_reference=row.document_reference, purpose=row.purpose, approved_at=row.approved_at,
            revoked_at=row.revoked_at, revocation_reason=row.revocation_reason,
        )  # fmt: skip

    @strawberry.field(description="Whether it grants downloads and exports today")
    def in_force(self) -> bool:
        return is_in_force(self.row)

    @strawberry.field
    async def parties(self, info: strawberry.Info) -> list[AgreementParty]:
        pairs = [("provider", self.row.provider_institution_id), ("recipient", self.row.recipient_institution_id)]
        parties = []
        for role, key in pairs:
            row = await info.context.row(catalogue.Institution, key)
            parties.append(AgreementParty(role=role, institution=Institution.of(row) if row else None))
        return parties

    @strawberry.field(description="The datasets it names (their versions published by approval, or later ones too)")
    async def datasets(self, info: strawberry.Info) -> list[Dataset]:
        links = await loaders(info).agreement_datasets.load(self.row.id)
        rows = await info.context.rows[catalogue.Dataset].load_many([link.dataset_id for link in links])
        return [_dataset(info, r) for r in rows if r]


@strawberry.type(description="A request for access to datasets, decided by each dataset's custodian.")
class AccessRequest(Node):
    row: strawberry.Private[models.AccessRequest]
    status: RequestStatus
    purpose_terms: list[str] = strawberry.field(description="DUO CURIEs: one of GRU, HMB, DS, POA; GSO, CC")
    disease: str | None = strawberry.field(description="MONDO CURIE, for a DS purpose")
    methods_development: bool
    commercial_use: bool
    lay_summary: str
    ethics_reference: str | None
    project: str | None
    period_start: date
    period_end: date
    orcid: str | None
    orcid_verified: bool = strawberry.field(
        description="The requester's institution vouched for the ORCID at sign-in; else the requester typed it in"
    )
    requester: str = strawberry.field(description="The requester, as the audit log names them")
    created_at: datetime

    @classmethod
    def of(cls, row: models.AccessRequest) -> AccessRequest:
        return cls(
            row=row, status=row.status, purpose_terms=list(row.purpose_terms), disease=row.disease,
            methods_development=row.methods_development, commercial_use=row.commercial_use,
            lay_summary=row.lay_summary, ethics_reference=row.ethics_reference, project=row.project,
            period_start=row.period_start, period_end=row.period_end, orcid=row.orcid,
            orcid_verified=row.orcid_verified,
            requester=row.requester_actor, created_at=row.created_at,
        )  # fmt: skip

    @strawberry.field
    async def requester_institution(self, info: strawberry.Info) -> Institution | None:
        row = await info.context.row(catalogue.Institution, self.row.requester_institution_id)
        return Institution.of(row) if row else None

    @strawberry.field
    async def datasets(self, info: strawberry.Info) -> list[RequestedDataset]:
        return [RequestedDataset(row=r) for r in await loaders(info).parts.load(self.row.id)]

    @strawberry.field
    async def decisions(self, info: strawberry.Info) -> list[AccessDecision]:
        return [
            AccessDecision(outcome=d.outcome, decided_by=d.decided_by, reason=d.reason, decided_at=d.created_at,
                           custodian_id=d.provider_institution_id)
            for d in await loaders(info).decisions.load(self.row.id)
        ]  # fmt: skip

    @strawberry.field
    async def history(self, info: strawberry.Info) -> list[AccessRequestEvent]:
        return [
            AccessRequestEvent(action=e.action, actor=e.actor, from_status=e.from_status, to_status=e.to_status,
                               message=e.message, at=e.created_at)
            for e in await loaders(info).history.load(self.row.id)
        ]  # fmt: skip

    @strawberry.field(description="The agreements its approvals created")
    async def agreements(self, info: strawberry.Info) -> list[Agreement]:
        return [Agreement.of(a) for a in await loaders(info).agreements.load(self.row.id)]


@strawberry.type(description="Something to tell a person (or an institution's stewards) about access.")
class AccessNotification:
    kind: NotificationKind
    message: str
    created_at: datetime


@strawberry.type(description="The matcher's verdict for one dataset.")
class DatasetVerdict:
    dataset: Dataset
    version: DatasetVersion
    verdict: Verdict


# ---- inputs -----------------------------------------------------------------------------------------------


@strawberry.input(description="What is requested, for what, by whom and for how long.")
class AccessRequestInput:
    datasets: list[strawberry.ID] = strawberry.field(description="Dataset ids (1–50)")
    purpose_terms: list[str] = strawberry.field(description="DUO CURIEs: exactly one of GRU, HMB, DS, POA; GSO, CC")
    commercial_use: bool
    lay_summary: str
    period_start: date
    period_end: date
    disease: str | None = strawberry.field(default=None, description="MONDO CURIE, exactly for a DS purpose")
    methods_development: bool = False
    ethics_reference: str | None = None
    project: str | None = None
    orcid: str | None = None


@strawberry.input(description="The agreement's terms; omitted ones take their defaults.")
class AgreementTermsInput:
    effective_on: date | None = strawberry.field(default=None, description="Default: the requested period's start")
    expires_on: date | None = strawberry.field(default=None, description="Default: the requested period's end")
    transfer_mechanism: TransferMechanism | None = strawberry.field(
        default=None, description="Default: intra_eea in the EEA, else the recipient's recorded transfer basis"
    )
    onward_transfer: OnwardTransfer = OnwardTransfer.prohibited
    publication_terms: str | None = None
    end_of_term: EndOfTerm = EndOfTerm.destroy
    export_policy: JSON | None = strawberry.field(
        default=None, description="Sensitivity tag → drop, generalise, pseudonymise or keep (direct identifiers: drop)"
    )
    covers_later_versions: bool = False
    document_reference: str | None = None


def _request_in(info: strawberry.Info, data: AccessRequestInput):
    raw = {name: getattr(data, name) for name in AccessRequestInput.__annotations__}
    raw["datasets"] = [
        info.context.ids.key_of(d, "Dataset", f"input.datasets[{i}]") for i, d in enumerate(data.datasets)
    ]
    return requests.parse_request(raw)


def _terms_in(terms: AgreementTermsInput | None) -> TermsIn:
    if terms is None:
        return TermsIn()
    raw = {name: getattr(terms, name) for name in AgreementTermsInput.__annotations__}
    return parse(TermsIn, {k: v for k, v in raw.items() if v is not None})


SIGNED_IN_TO = "use access requests and agreements"
Page = tuple[int | None, str | None, int | None, str | None]


async def _connection(info: strawberry.Info, query, model: type, to_node, page: Page) -> Connection:
    request = page_request(info.context.ids, *page)
    return await sql_connection(info.context, query, model, request, to_node)


# ---- root fields ------------------------------------------------------------------------------------------


@strawberry.type
class AccessQuery:
    @strawberry.field(description="Your own access requests, any status.")
    async def my_access_requests(
        self, info: strawberry.Info, first: int | None = None, after: str | None = None,
        last: int | None = None, before: str | None = None,
    ) -> Connection[AccessRequest]:  # fmt: skip
        query = repository.my_requests_query(info.context.principal)
        return await _connection(info, query, models.AccessRequest, AccessRequest.of, (first, after, last, before))

    @strawberry.field(description="Stewards: submitted requests for your institution's datasets still to decide.")
    async def access_request_queue(
        self, info: strawberry.Info, first: int | None = None, after: str | None = None,
        last: int | None = None, before: str | None = None,
    ) -> Connection[AccessRequest]:  # fmt: skip
        query = repository.steward_queue_query(info.context.principal)
        return await _connection(info, query, models.AccessRequest, AccessRequest.of, (first, after, last, before))

    @strawberry.field(description="One access request you made or decide on; null when missing or hidden.")
    async def access_request(self, info: strawberry.Info, id: strawberry.ID) -> AccessRequest | None:
        key = info.context.ids.key_of(id, "AccessRequest", "id")
        try:
            row = await info.context.read(get_visible, info.context.principal, models.AccessRequest, key)
        except NotFound:
            return None
        return AccessRequest.of(row)

    @strawberry.field(description="Agreements your institution is a party to (recipient or provider).")
    async def my_agreements(
        self, info: strawberry.Info, first: int | None = None, after: str | None = None,
        last: int | None = None, before: str | None = None, in_force_only: bool = False,
    ) -> Connection[Agreement]:  # fmt: skip
        query = repository.my_agreements_query(info.context.principal)
        if in_force_only:
            query = query.where(in_force(today()))
        return await _connection(info, query, models.Agreement, Agreement.of, (first, after, last, before))

    @strawberry.field(description="Notifications for you (and, for stewards, for your institution's DAC).")
    async def my_access_notifications(
        self, info: strawberry.Info, first: int | None = None, after: str | None = None,
        last: int | None = None, before: str | None = None,
    ) -> Connection[AccessNotification]:  # fmt: skip
        query = repository.notifications_query(info.context.principal)
        to_node = lambda r: AccessNotification(kind=r.kind, message=r.message, created_at=r.created_at)  # noqa: E731
        return await _connection(info, query, models.Notification, to_node, (first, after, last, before))

    @strawberry.field(description="The DUO matcher's verdict on each dataset for this purpose, saving nothing.")
    async def access_match_preview(self, info: strawberry.Info, input: AccessRequestInput) -> list[DatasetVerdict]:
        info.context.signed_in(SIGNED_IN_TO)
        data = _request_in(info, input)
        node_id = info.context.settings.node_id
        results = await info.context.read(partial(requests.preview, node_id=node_id), info.context.principal, data)
        return [
            DatasetVerdict(dataset=Dataset.of(d, node_id), version=DatasetVersion.of(v), verdict=Verdict.of(verdict))
            for d, v, verdict in results
        ]


@strawberry.type
class AccessMutation:
    @strawberry.mutation(description="Draft a request (and submit it at once with submit: true).")
    async def request_access(
        self, info: strawberry.Info, input: AccessRequestInput, submit: bool = False
    ) -> AccessRequest:
        info.context.signed_in(SIGNED_IN_TO)
        data = _request_in(info, input)

        node_id = info.context.settings.node_id

        async def work(session: AsyncSession, principal, data) -> models.AccessRequest:
            request = await requests.create_request(session, principal, data, node_id=node_id)
            return await requests.submit(session, principal, request.id, node_id=node_id) if submit else request

        return AccessRequest.of(await info.context.committed(work, data))

    @strawberry.mutation(description="Change a draft request (after a clarification, say).")
    async def update_access_request(
        self, info: strawberry.Info, id: strawberry.ID, input: AccessRequestInput
    ) -> AccessRequest:
        info.context.signed_in(SIGNED_IN_TO)
        key, data = info.context.ids.key_of(id, "AccessRequest", "id"), _request_in(info, input)
        update = partial(requests.update_request, node_id=info.context.settings.node_id)
        return AccessRequest.of(await info.context.committed(update, key, data))

    @strawberry.mutation(description="Submit a draft: the matcher judges each dataset and the custodians are told.")
    async def submit_access_request(self, info: strawberry.Info, id: strawberry.ID) -> AccessRequest:
        info.context.signed_in(SIGNED_IN_TO)
        submit, key = (
            partial(requests.submit, node_id=info.context.settings.node_id),
            info.context.ids.key_of(id, "AccessRequest", "id"),
        )
        return AccessRequest.of(await info.context.committed(submit, key))

    @strawberry.mutation(description="Take a submitted request back to draft, before any custodian decided.")
    async def withdraw_access_request(self, info: strawberry.Info, id: strawberry.ID, reason: str) -> AccessRequest:
        info.context.signed_in(SIGNED_IN_TO)
        key = info.context.ids.key_of(id, "AccessRequest", "id")
        return AccessRequest.of(await info.context.committed(requests.withdraw, key, _reason(reason, "reason")))

    @strawberry.mutation(description="Stewards: send a request back to its requester as a draft, with a question.")
    async def ask_clarification(self, info: strawberry.Info, id: strawberry.ID, message: str) -> AccessRequest:
        info.context.signed_in(SIGNED_IN_TO)
        key = info.context.ids.key_of(id, "AccessRequest", "id")
        return AccessRequest.of(
            await info.context.committed(requests.ask_clarification, key, _reason(message, "message"))
        )

    @strawberry.mutation(description="Stewards: approve your institution's share of a request; makes the agreement.")
    async def approve_access_request(
        self, info: strawberry.Info, id: strawberry.ID, terms: AgreementTermsInput | None = None
    ) -> Agreement:
        info.context.signed_in(SIGNED_IN_TO)
        key, parsed = info.context.ids.key_of(id, "AccessRequest", "id"), _terms_in(terms)
        return Agreement.of(await info.context.committed(decisions.approve, key, parsed))

    @strawberry.mutation(description="Stewards: reject your institution's share of a request, with the reason.")
    async def reject_access_request(self, info: strawberry.Info, id: strawberry.ID, reason: str) -> AccessRequest:
        info.context.signed_in(SIGNED_IN_TO)
        key = info.context.ids.key_of(id, "AccessRequest", "id")
        return AccessRequest.of(await info.context.committed(decisions.reject, key, _reason(reason, "reason")))

    @strawberry.mutation(description="Stewards of the provider: revoke an agreement; downloads and exports stop.")
    async def revoke_agreement(self, info: strawberry.Info, id: strawberry.ID, reason: str) -> Agreement:
        info.context.signed_in(SIGNED_IN_TO)
        key = info.context.ids.key_of(id, "Agreement", "id")
        return Agreement.of(await info.context.committed(decisions.revoke, key, _reason(reason, "reason")))


def _reason(text: str, field: str) -> str:
    text = text.strip()
    if not 1 <= len(text) <= 5_000:
        raise InvalidInput("give a reason of 1 to 5000 characters", field=field)
    return text
