"""Queries for files: the policy's visibility and download rules are inside every SELECT.

URL issuance is the platform's hottest write, so each query here is one statement that decides visibility,
the download right and the covering DUA together, and is built once per shape of principal (its roles) with
the principal's institution, the day and the ids as bound parameters: building the policy's SQL costs more
CPU than running it.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Date, Select, String, and_, bindparam, column, exists, func, inspect, or_, select
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, make_transient_to_detached

from cellcommons.access import agreements
from cellcommons.access.models import Agreement, AgreementDataset
from cellcommons.access.visibility import (
    VIEWER,
    downloadable_dataset_versions,
    standing_in,
    visible_dataset_versions,
    visible_distributions,
)
from cellcommons.auth.principal import Principal, Role
from cellcommons.catalogue.enums import VersionStatus
from cellcommons.catalogue.models import Dataset, DatasetVersion, Distribution, Institution
from cellcommons.db import DriverStatement
from cellcommons.exports.models import ExportJob, ExportStatus
from cellcommons.storage.models import FileUpload, UploadStatus


@dataclass(frozen=True)
class FileView:
    """A distribution the principal may see, with what downloading and auditing it need."""

    distribution: Distribution
    version: DatasetVersion
    custodian_id: uuid.UUID
    custodian_slug: str
    downloadable: bool


@dataclass(frozen=True)
class DownloadTarget:
    """A distribution the principal may download, with its custodian (the bucket and the audit's institution)."""

    distribution: Distribution
    custodian_id: uuid.UUID
    custodian_slug: str


def _covered_by_agreement(principal: Principal, version=DatasetVersion) -> ColumnElement[bool]:
    """`access.agreements.covered_dataset_versions` as an EXISTS on `version`, so that the same statement
    decides (tests/storage/test_repository.py checks both agree): an agreement in force for the principal's
    institution names the dataset, and covers this published version."""
    agreement, named = aliased(Agreement), aliased(AgreementDataset)
    return exists().where(
        named.dataset_id == version.dataset_id,
        agreement.id == named.agreement_id,
        agreement.recipient_institution_id == principal.institution_id,
        agreements.in_force(bindparam("on", type_=Date()), agreement),
        version.status == VersionStatus.published,
        or_(agreement.covers_later_versions, version.published_at <= agreement.approved_at),
    )


def _may_download(principal: Principal, version=DatasetVersion) -> ColumnElement[bool]:
    by_role = downloadable_dataset_versions(principal, frozenset(), version)  # owners' stewards and submitters
    by_agreement = and_(visible_dataset_versions(principal, version), _covered_by_agreement(principal, version))
    return or_(by_role, by_agreement)


def _custodied(statement: Select) -> Select:
    return statement.join(Dataset, Dataset.id == DatasetVersion.dataset_id).join(
        Institution, Institution.id == Dataset.institution_id
    )


@functools.cache
def _file_views(roles: frozenset[Role]) -> Select:
    principal = standing_in(roles)
    return _custodied(
        select(Distribution, DatasetVersion, Institution.id, Institution.slug, _may_download(principal).label("d"))
        .join(DatasetVersion, DatasetVersion.id == Distribution.dataset_version_id)
        .where(Distribution.id == bindparam("distribution_id"), visible_distributions(principal))
    )


@functools.cache
def _download_targets(roles: frozenset[Role]) -> Select:
    return _custodied(
        select(Distribution, Institution.id, Institution.slug)
        .join(DatasetVersion, DatasetVersion.id == Distribution.dataset_version_id)
        .where(Distribution.id.in_(bindparam("distribution_ids", expanding=True)), _may_download(standing_in(roles)))
    )


_DISTRIBUTION_COLUMNS = tuple(inspect(Distribution).column_attrs)


@functools.cache
def _download_target(roles: frozenset[Role]) -> DriverStatement:
    """`_download_targets` for one file, on the driver: URL issuance, the platform's hottest statement."""
    return DriverStatement(
        _custodied(
            select(*(attribute.expression for attribute in _DISTRIBUTION_COLUMNS), Institution.id, Institution.slug)
            .join(DatasetVersion, DatasetVersion.id == Distribution.dataset_version_id)
            .where(Distribution.id == bindparam("distribution_id", type_=UUID), _may_download(standing_in(roles)))
        )
    )


@functools.cache
def _downloadable_versions(roles: frozenset[Role]) -> Select:
    return _custodied(
        select(DatasetVersion, Institution.id, Institution.slug).where(
            DatasetVersion.id == bindparam("version_id"), _may_download(standing_in(roles))
        )
    )


def _bound(principal: Principal, **ids: object) -> dict[str, object]:
    return {VIEWER: principal.institution_id, "on": agreements.today(), **ids}


async def file_view(session: AsyncSession, principal: Principal | None, distribution_id: uuid.UUID) -> FileView | None:
    """The file's metadata if the principal may see it, saying whether it may also download it."""
    if principal is None:
        return None
    found = await session.execute(_file_views(principal.roles), _bound(principal, distribution_id=distribution_id))
    row = found.first()
    return FileView(*row) if row else None


async def download_targets(
    session: AsyncSession, principal: Principal | None, distribution_ids: list[uuid.UUID]
) -> list[DownloadTarget]:
    """Those of the files the principal may download now (whether uploaded or not)."""
    if principal is None or not distribution_ids:
        return []
    bound = _bound(principal, distribution_ids=list(distribution_ids))
    return [DownloadTarget(*row) for row in await session.execute(_download_targets(principal.roles), bound)]


async def download_target(
    session: AsyncSession, principal: Principal | None, distribution_id: uuid.UUID
) -> DownloadTarget | None:
    """The file if the principal may download it now (whether uploaded or not): `download_targets` for one."""
    if principal is None:
        return None
    found = await _download_target(principal.roles).rows(session, **_bound(principal, distribution_id=distribution_id))
    if not found:
        return None
    *columns, custodian_id, custodian_slug = found[0]
    distribution = Distribution(**{a.key: value for a, value in zip(_DISTRIBUTION_COLUMNS, columns, strict=True)})
    make_transient_to_detached(distribution)  # as if loaded, though the session never saw it
    return DownloadTarget(distribution, custodian_id, custodian_slug)


async def downloadable_version(
    session: AsyncSession, principal: Principal | None, version_id: uuid.UUID
) -> tuple[DatasetVersion, uuid.UUID, str] | None:
    """The version with its custodian's id and slug, if the principal may download its files."""
    if principal is None:
        return None
    found = await session.execute(_downloadable_versions(principal.roles), _bound(principal, version_id=version_id))
    row = found.first()
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


async def abandoned_uploads(session: AsyncSession, before: datetime, limit: int) -> list[tuple[FileUpload, str]]:
    """Pending uploads whose last URL expired before `before`, oldest first, with their institution's slug;
    locked, skipping any that a completion (or another cleanup) holds."""
    rows = await session.execute(
        select(FileUpload, Institution.slug)
        .join(Institution, Institution.id == FileUpload.institution_id)
        .where(FileUpload.status == UploadStatus.pending, FileUpload.url_expires_at < before)
        .order_by(FileUpload.url_expires_at)
        .limit(limit)
        .with_for_update(of=FileUpload, skip_locked=True)
    )
    return [tuple(row) for row in rows]


async def pending_staging_keys(session: AsyncSession) -> set[str]:
    """The staging keys that pending uploads may still fill or complete."""
    return set(await session.scalars(select(FileUpload.staging_key).where(FileUpload.status == UploadStatus.pending)))


def _listed(*names: str):
    """The rows given as parallel arrays (`unnest`), as a table with these columns: the first the key, the
    others ids (UUID)."""
    types = [String, *[UUID] * (len(names) - 1)]
    arrays = [bindparam(name, type_=ARRAY(type_)) for name, type_ in zip(names, types, strict=True)]
    return (
        func.unnest(*arrays).table_valued(*(column(n, t) for n, t in zip(names, types, strict=True))).render_derived()
    )


@functools.cache
def _named_files() -> Select:
    listed = _listed("key", "version_id", "upload_id")
    named = exists().where(
        Distribution.dataset_version_id == listed.c.version_id, Distribution.storage_key == listed.c.key
    )
    completing = exists().where(FileUpload.id == listed.c.upload_id, FileUpload.status == UploadStatus.pending)
    return select(listed.c.key).where(or_(named, completing))


async def named_files(session: AsyncSession, files: list[tuple[str, uuid.UUID, uuid.UUID]]) -> set[str]:
    """Of these file keys (key, dataset version, upload), those a distribution names, or that a pending upload may
    still complete into (a completion whose transaction was lost is repeated on the file at its key). One
    statement, one snapshot: a completion records the key and ends its upload in the same commit."""
    if not files:
        return set()
    keys, versions, upload_ids = (list(column) for column in zip(*files, strict=True))
    return set(await session.scalars(_named_files(), {"key": keys, "version_id": versions, "upload_id": upload_ids}))


@functools.cache
def _named_exports() -> Select:
    listed = _listed("key", "job_id")
    in_flight = ExportJob.status.in_([ExportStatus.queued, ExportStatus.running])
    named = exists().where(ExportJob.id == listed.c.job_id, or_(ExportJob.result_key == listed.c.key, in_flight))
    return select(listed.c.key).where(named)


async def named_exports(session: AsyncSession, results: list[tuple[str, uuid.UUID]]) -> set[str]:
    """Of these export keys (key, job), those a job names as its result whatever its status or agreement, and
    those of jobs still queued or running (an attempt may be about to record its key). One statement, one
    snapshot: a job records its result and leaves `running` in the same commit."""
    if not results:
        return set()
    keys, job_ids = (list(column) for column in zip(*results, strict=True))
    return set(await session.scalars(_named_exports(), {"key": keys, "job_id": job_ids}))
