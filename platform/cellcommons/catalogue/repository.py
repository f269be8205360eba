"""Catalogue queries. Each takes the owning institution, so one institution never reaches another's rows."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from cellcommons.catalogue.models import (
    Batch,
    Collection,
    Dataset,
    DatasetVersion,
    Donor,
    Institution,
    Specification,
    batch_collection,
    batch_donor,
    dataset_version_batch,
)


async def institution_by_slug(session: AsyncSession, slug: str) -> Institution | None:
    return await session.scalar(select(Institution).where(Institution.slug == slug))


async def donors_by_pseudonym(
    session: AsyncSession, institution_id: uuid.UUID, pseudonyms: Sequence[str]
) -> dict[str, Donor]:
    rows = await session.scalars(
        select(Donor)
        .where(Donor.institution_id == institution_id, Donor.pseudonym.in_(pseudonyms))
        .options(selectinload(Donor.tests), selectinload(Donor.consent_conditions))
    )
    return {d.pseudonym: d for d in rows}


async def collections_by_identifier(
    session: AsyncSession, institution_id: uuid.UUID, identifiers: Sequence[str]
) -> dict[str, Collection]:
    """Collections named by DIN or by SEC donation part."""
    rows = await session.scalars(
        select(Collection).where(
            Collection.institution_id == institution_id,
            Collection.din.in_(identifiers) | Collection.sec_donation.in_(identifiers),
        )
    )
    found: dict[str, Collection] = {}
    for c in rows:
        for identifier in (c.din, c.sec_donation):
            if identifier:
                found[identifier] = c
    return found


async def specification_by_version(
    session: AsyncSession, institution_id: uuid.UUID, version: str
) -> Specification | None:
    return await session.scalar(
        select(Specification)
        .where(Specification.institution_id == institution_id, Specification.version == version)
        .options(selectinload(Specification.criteria))
    )


async def batch_by_lot(session: AsyncSession, institution_id: uuid.UUID, lot_number: str) -> Batch | None:
    return await session.scalar(
        select(Batch)
        .where(Batch.institution_id == institution_id, Batch.lot_number == lot_number)
        .options(selectinload(Batch.qc_results))
    )


async def batches_by_lot(
    session: AsyncSession, institution_id: uuid.UUID, lot_numbers: Sequence[str]
) -> dict[str, Batch]:
    rows = await session.scalars(
        select(Batch)
        .where(Batch.institution_id == institution_id, Batch.lot_number.in_(lot_numbers))
        .options(selectinload(Batch.qc_results))
    )
    return {b.lot_number: b for b in rows}


async def dataset_by_accession(session: AsyncSession, institution_id: uuid.UUID, accession: str) -> Dataset | None:
    return await session.scalar(
        select(Dataset).where(Dataset.institution_id == institution_id, Dataset.accession == accession)
    )


async def latest_version(session: AsyncSession, dataset_id: uuid.UUID) -> DatasetVersion | None:
    return await session.scalar(
        select(DatasetVersion)
        .where(DatasetVersion.dataset_id == dataset_id)
        .order_by(DatasetVersion.version.desc())
        .limit(1)
        .options(selectinload(DatasetVersion.distributions), selectinload(DatasetVersion.conditions))
    )


async def _replace_links(session: AsyncSession, table, owner_column: str, owner_id, other_column: str, others) -> None:
    await session.execute(delete(table).where(table.c[owner_column] == owner_id))
    if others:
        await session.execute(insert(table), [{owner_column: owner_id, other_column: o} for o in others])


async def replace_batch_links(
    session: AsyncSession, batch_id: uuid.UUID, donor_ids: Sequence[uuid.UUID], collection_ids: Sequence[uuid.UUID]
) -> None:
    await _replace_links(session, batch_donor, "batch_id", batch_id, "donor_id", donor_ids)
    await _replace_links(session, batch_collection, "batch_id", batch_id, "collection_id", collection_ids)


async def replace_version_batches(session: AsyncSession, version_id: uuid.UUID, batch_ids: Sequence[uuid.UUID]) -> None:
    await _replace_links(session, dataset_version_batch, "dataset_version_id", version_id, "batch_id", batch_ids)
