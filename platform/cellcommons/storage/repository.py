"""Queries for files: the policy's visibility and download rules are inside every SELECT."""

from __future__ import annotations

import uuid
from collections.abc import Set
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.access.visibility import downloadable_dataset_versions, visible_distributions
from cellcommons.auth.principal import Principal
from cellcommons.catalogue.models import Dataset, DatasetVersion, Distribution, Institution
from cellcommons.storage.models import FileUpload


@dataclass(frozen=True)
class FileView:
    """A distribution the principal may see, with what downloading and auditing it need."""

    distribution: Distribution
    version: DatasetVersion
    custodian_id: uuid.UUID
    custodian_slug: str
    downloadable: bool


def _file_views(principal: Principal | None, covered: Set[uuid.UUID]):
    return (
        select(
            Distribution,
            DatasetVersion,
            Institution.id,
            Institution.slug,
            downloadable_dataset_versions(principal, covered).label("downloadable"),
        )
        .join(DatasetVersion, DatasetVersion.id == Distribution.dataset_version_id)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .join(Institution, Institution.id == Dataset.institution_id)
        .where(visible_distributions(principal))
    )


async def file_view(
    session: AsyncSession, principal: Principal | None, covered: Set[uuid.UUID], distribution_id: uuid.UUID
) -> FileView | None:
    row = (await session.execute(_file_views(principal, covered).where(Distribution.id == distribution_id))).first()
    return FileView(*row) if row else None


async def downloadable_version(
    session: AsyncSession, principal: Principal | None, covered: Set[uuid.UUID], version_id: uuid.UUID
) -> tuple[DatasetVersion, uuid.UUID, str] | None:
    """The version with its custodian's id and slug, if the principal may download its files."""
    row = (
        await session.execute(
            select(DatasetVersion, Institution.id, Institution.slug)
            .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
            .join(Institution, Institution.id == Dataset.institution_id)
            .where(DatasetVersion.id == version_id, downloadable_dataset_versions(principal, covered))
        )
    ).first()
    return tuple(row) if row else None


async def stored_files(session: AsyncSession, version_id: uuid.UUID) -> list[Distribution]:
    """The version's files that have verified contents, by name (callers checked the version first)."""
    rows = await session.scalars(
        select(Distribution)
        .where(Distribution.dataset_version_id == version_id, Distribution.storage_key.is_not(None))
        .order_by(Distribution.file_name)
    )
    return list(rows)


async def own_upload_for_update(session: AsyncSession, principal: Principal, upload_id: uuid.UUID) -> FileUpload | None:
    """An upload of the principal's institution, locked so that two completions cannot both move it."""
    return await session.scalar(
        select(FileUpload)
        .where(FileUpload.id == upload_id, FileUpload.institution_id == principal.institution_id)
        .with_for_update()
    )
