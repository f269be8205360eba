"""Reading the catalogue for a principal: keyset pages and batched lookups, the policy inside every SELECT.

Everything here takes the principal and puts `access.visibility` filters into the query itself, so a hidden row
is never fetched; callers (GraphQL dataloaders, portal routes) only shape the results.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.access import visibility
from cellcommons.auth.principal import Principal
from cellcommons.catalogue.models import (
    Batch,
    Dataset,
    DatasetVersion,
    DataUseCondition,
    Distribution,
    Donor,
    Institution,
    QcResult,
    SpecCriterion,
    Specification,
    batch_donor,
    dataset_version_batch,
)

MAX_PAGE = 100
Ids = Sequence[uuid.UUID]


@dataclass(frozen=True)
class PageRequest:
    first: int | None = None
    after: tuple[datetime, uuid.UUID] | None = None
    last: int | None = None
    before: tuple[datetime, uuid.UUID] | None = None

    @property
    def size(self) -> int:
        return self.first if self.first is not None else self.last or 0


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    has_next: bool
    has_previous: bool


def _key(model: Any) -> ColumnElement:
    return tuple_(model.created_at, model.id)


async def keyset_page(session: AsyncSession, query: Select, model: Any, request: PageRequest) -> Page:
    """A page of `query` ordered by (created_at, id): stable under inserts, no OFFSET."""
    key = _key(model)
    if request.after is not None:
        query = query.where(key > tuple_(*request.after))
    if request.before is not None:
        query = query.where(key < tuple_(*request.before))
    forward = request.last is None
    order = (model.created_at, model.id) if forward else (model.created_at.desc(), model.id.desc())
    rows = list((await session.scalars(query.order_by(*order).limit(request.size + 1))).all())
    more = len(rows) > request.size
    rows = rows[: request.size]
    if not forward:
        rows.reverse()
    # The far side of a cursor: only known to exist when the client came from there.
    if forward:
        return Page(rows, has_next=more, has_previous=request.after is not None)
    return Page(rows, has_next=request.before is not None, has_previous=more)


async def count(session: AsyncSession, query: Select) -> int:
    return await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))


def institutions_query(principal: Principal | None) -> Select:
    return select(Institution).where(visibility.visible_institutions(principal))


def datasets_query(principal: Principal | None) -> Select:
    return select(Dataset).where(visibility.visible_datasets(principal))


def batches_query(principal: Principal | None, tissue: str | None = None) -> Select:
    query = select(Batch).where(visibility.visible_batches(principal))
    return query.where(Batch.tissue == tissue) if tissue else query


async def by_ids(session: AsyncSession, principal: Principal | None, model: Any, ids: Ids) -> dict:
    """Visible rows of `model` by id; hidden and missing ids are simply absent."""
    rows = await session.scalars(select(model).where(model.id.in_(ids), visibility.VISIBLE[model](principal, model)))
    return {row.id: row for row in rows}


async def _grouped(session: AsyncSession, query: Select, parent_of) -> dict[uuid.UUID, list]:
    grouped: dict[uuid.UUID, list] = defaultdict(list)
    for row in await session.scalars(query):
        grouped[parent_of(row)].append(row)
    return grouped


async def qc_results_of(session: AsyncSession, principal: Principal | None, batch_ids: Ids) -> dict:
    query = (
        select(QcResult)
        .where(QcResult.batch_id.in_(batch_ids), visibility.visible_qc_results(principal))
        .order_by(QcResult.batch_id, QcResult.position)
    )
    return await _grouped(session, query, lambda r: r.batch_id)


async def criteria_of(session: AsyncSession, principal: Principal | None, spec_ids: Ids) -> dict:
    query = (
        select(SpecCriterion)
        .where(SpecCriterion.specification_id.in_(spec_ids), visibility.visible_spec_criteria(principal))
        .order_by(SpecCriterion.specification_id, SpecCriterion.position)
    )
    return await _grouped(session, query, lambda r: r.specification_id)


async def versions_of(session: AsyncSession, principal: Principal | None, dataset_ids: Ids) -> dict:
    query = (
        select(DatasetVersion)
        .where(DatasetVersion.dataset_id.in_(dataset_ids), visibility.visible_dataset_versions(principal))
        .order_by(DatasetVersion.dataset_id, DatasetVersion.version)
    )
    return await _grouped(session, query, lambda r: r.dataset_id)


async def distributions_of(session: AsyncSession, principal: Principal | None, version_ids: Ids) -> dict:
    query = (
        select(Distribution)
        .where(Distribution.dataset_version_id.in_(version_ids), visibility.visible_distributions(principal))
        .order_by(Distribution.dataset_version_id, Distribution.file_name)
    )
    return await _grouped(session, query, lambda r: r.dataset_version_id)


async def conditions_of(session: AsyncSession, principal: Principal | None, version_ids: Ids) -> dict:
    query = (
        select(DataUseCondition)
        .where(DataUseCondition.dataset_version_id.in_(version_ids), visibility.visible_conditions(principal))
        .order_by(DataUseCondition.dataset_version_id, DataUseCondition.term)
    )
    return await _grouped(session, query, lambda r: r.dataset_version_id)


async def batches_of(session: AsyncSession, principal: Principal | None, version_ids: Ids) -> dict:
    """Each version's visible batches, in (created_at, id) order."""
    link = dataset_version_batch
    rows = await session.execute(
        select(link.c.dataset_version_id, Batch)
        .join(Batch, Batch.id == link.c.batch_id)
        .where(link.c.dataset_version_id.in_(version_ids), visibility.visible_batches(principal))
        .order_by(link.c.dataset_version_id, Batch.created_at, Batch.id)
    )
    grouped: dict[uuid.UUID, list] = defaultdict(list)
    for version_id, batch in rows:
        grouped[version_id].append(batch)
    return grouped


async def donor_counts(session: AsyncSession, batch_ids: Ids) -> dict[uuid.UUID, int]:
    """How many donors each batch pools (a number is public; who they are is not)."""
    rows = await session.execute(
        select(batch_donor.c.batch_id, func.count())
        .where(batch_donor.c.batch_id.in_(batch_ids))
        .group_by(batch_donor.c.batch_id)
    )
    return dict(rows.all())


NODE_MODELS: dict[str, Any] = {
    "Institution": Institution,
    "Dataset": Dataset,
    "DatasetVersion": DatasetVersion,
    "Batch": Batch,
    "Specification": Specification,
    "QcResult": QcResult,
    "Distribution": Distribution,
    "Donor": Donor,
}
