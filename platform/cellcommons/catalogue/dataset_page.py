"""Everything a dataset's page shows, loaded for one principal with the policy in every query."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.access import visibility
from cellcommons.access.policy import not_found
from cellcommons.auth.principal import Principal
from cellcommons.catalogue import reading
from cellcommons.catalogue.models import Batch, Dataset, DatasetVersion, Institution, QcResult, SpecCriterion


@dataclass
class BatchSummary:
    batch: Batch
    results: list[QcResult]
    criteria: list[SpecCriterion]


@dataclass
class DatasetPage:
    dataset: Dataset
    custodian: Institution
    versions: list[DatasetVersion]
    version: DatasetVersion
    conditions: list = field(default_factory=list)
    distributions: list = field(default_factory=list)
    batches: list[BatchSummary] = field(default_factory=list)


async def dataset_page(
    session: AsyncSession, principal: Principal | None, accession: str, version: int | None = None
) -> DatasetPage:
    """The dataset by accession; a hidden one raises the same NotFound as a missing one."""
    if "\x00" in accession:  # no accession holds one, and PostgreSQL refuses it as a parameter
        raise not_found("dataset", accession)
    dataset = await session.scalar(
        select(Dataset).where(Dataset.accession == accession, visibility.visible_datasets(principal))
    )
    if dataset is None:
        raise not_found("dataset", accession)
    versions = (await reading.versions_of(session, principal, [dataset.id])).get(dataset.id, [])
    chosen = versions[-1] if version is None else next((v for v in versions if v.version == version), None)
    if chosen is None:
        raise not_found("dataset version", f"{accession} v{version}")
    custodian = (await reading.by_ids(session, principal, Institution, [dataset.institution_id]))[
        dataset.institution_id
    ]
    batches = (await reading.batches_of(session, principal, [chosen.id])).get(chosen.id, [])
    return DatasetPage(
        dataset=dataset,
        custodian=custodian,
        versions=versions,
        version=chosen,
        conditions=(await reading.conditions_of(session, principal, [chosen.id])).get(chosen.id, []),
        distributions=(await reading.distributions_of(session, principal, [chosen.id])).get(chosen.id, []),
        batches=await _summaries(session, principal, batches),
    )


async def _summaries(session: AsyncSession, principal: Principal | None, batches: list[Batch]) -> list[BatchSummary]:
    results = await reading.qc_results_of(session, principal, [b.id for b in batches])
    spec_ids: list[uuid.UUID] = [b.specification_id for b in batches if b.specification_id]
    criteria = await reading.criteria_of(session, principal, spec_ids)
    return [
        BatchSummary(batch=b, results=results.get(b.id, []), criteria=criteria.get(b.specification_id, []))
        for b in batches
    ]
