"""Access queries; each applies the policy's visibility in the SELECT itself."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.access.models import (
    AccessDecision,
    AccessRequest,
    Agreement,
    AgreementDataset,
    Notification,
    RequestedDataset,
    RequestEvent,
    RequestStatus,
)
from cellcommons.access.visibility import visible_access_requests, visible_agreements, visible_dataset_versions
from cellcommons.auth.principal import Principal, Role
from cellcommons.catalogue.enums import AccessRights, VersionStatus
from cellcommons.catalogue.models import Dataset, DatasetVersion, DataUseCondition


async def requestable_versions(
    session: AsyncSession, principal: Principal, dataset_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[Dataset, DatasetVersion]]:
    """Each dataset's newest version the principal may see that is published and shared (never non_public)."""
    newest = (
        select(DatasetVersion.dataset_id, func.max(DatasetVersion.version).label("version"))
        .where(
            DatasetVersion.dataset_id.in_(dataset_ids),
            DatasetVersion.status == VersionStatus.published,
            DatasetVersion.access_rights != AccessRights.non_public,
            visible_dataset_versions(principal),
        )
        .group_by(DatasetVersion.dataset_id)
        .subquery()
    )
    rows = await session.execute(
        select(Dataset, DatasetVersion)
        .join(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
        .join(newest, (newest.c.dataset_id == Dataset.id) & (newest.c.version == DatasetVersion.version))
    )
    return {dataset.id: (dataset, version) for dataset, version in rows}


async def conditions_of(session: AsyncSession, version_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list]:
    grouped: dict[uuid.UUID, list] = defaultdict(list)
    rows = await session.scalars(select(DataUseCondition).where(DataUseCondition.dataset_version_id.in_(version_ids)))
    for row in rows:
        grouped[row.dataset_version_id].append(row)
    return grouped


async def requested_datasets(session: AsyncSession, request_id: uuid.UUID) -> list[RequestedDataset]:
    return list(await session.scalars(select(RequestedDataset).where(RequestedDataset.request_id == request_id)))


async def decisions(session: AsyncSession, request_id: uuid.UUID) -> list[AccessDecision]:
    query = select(AccessDecision).where(AccessDecision.request_id == request_id).order_by(AccessDecision.created_at)
    return list(await session.scalars(query))


async def history(session: AsyncSession, request_id: uuid.UUID) -> list[RequestEvent]:
    query = select(RequestEvent).where(RequestEvent.request_id == request_id).order_by(RequestEvent.created_at)
    return list(await session.scalars(query))


async def agreements_of_request(session: AsyncSession, request_id: uuid.UUID) -> list[Agreement]:
    return list(await session.scalars(select(Agreement).where(Agreement.request_id == request_id)))


async def agreement_dataset_ids(session: AsyncSession, agreement_id: uuid.UUID) -> list[uuid.UUID]:
    query = select(AgreementDataset.dataset_id).where(AgreementDataset.agreement_id == agreement_id)
    return list(await session.scalars(query))


def my_requests_query(principal: Principal | None) -> Select:
    query = select(AccessRequest).where(visible_access_requests(principal))
    if principal is None:
        return query
    return query.where(
        AccessRequest.requester_institution_id == principal.institution_id,
        AccessRequest.requester_actor == principal.actor,
    )


def steward_queue_query(principal: Principal | None) -> Select:
    """Submitted requests naming a dataset of the steward's institution that it has not decided yet."""
    query = select(AccessRequest).where(visible_access_requests(principal))
    if principal is None or not principal.has(Role.steward):
        return query.where(AccessRequest.id.is_(None))
    institution = principal.institution_id
    ours = select(RequestedDataset.request_id).where(RequestedDataset.provider_institution_id == institution)
    decided = select(AccessDecision.request_id).where(AccessDecision.provider_institution_id == institution)
    return query.where(
        AccessRequest.status.in_([RequestStatus.submitted, RequestStatus.in_review]),
        AccessRequest.id.in_(ours),
        AccessRequest.id.not_in(decided),
    )


def my_agreements_query(principal: Principal | None) -> Select:
    """Agreements where the principal's institution is a party (recipient or provider)."""
    return select(Agreement).where(visible_agreements(principal))


def notifications_query(principal: Principal | None) -> Select:
    """Notifications for the person, and for the institution's stewards those addressed to no one in particular."""
    if principal is None:
        return select(Notification).where(Notification.id.is_(None))
    addressed = Notification.subject == principal.subject
    if principal.has(Role.steward):
        addressed = addressed | Notification.subject.is_(None)
    return select(Notification).where(Notification.institution_id == principal.institution_id, addressed)


async def parts_of(
    session: AsyncSession, model: type, parent: str, parent_ids: Sequence[uuid.UUID],
    visible: ColumnElement[bool] | None = None,
) -> dict:  # fmt: skip
    """Rows of `model` by parent id, oldest first. The parents were loaded under the policy; parts follow them,
    except rows with a visibility of their own (`visible`): an agreement one custodian made on a request that
    names other custodians' datasets is not theirs to see."""
    key = getattr(model, parent)
    query = select(model).where(key.in_(parent_ids)).order_by(getattr(model, "created_at", key))
    grouped: dict[uuid.UUID, list] = defaultdict(list)
    for row in await session.scalars(query if visible is None else query.where(visible)):
        grouped[getattr(row, parent)].append(row)
    return grouped
