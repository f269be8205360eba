"""Export jobs: request one under a data-use agreement, read it back, download its result.

The API the GraphQL layer, the CLI and the portal call:
- `request_export(session, settings, principal, agreement_id=, dataset_version_id=, distribution_id=None,
  columns=None, row_filter=None, bad_rows=BadRows.fail)` → a queued `ExportJob` (audited);
- `get_export(session, principal, export_id)` and `list_exports(session, principal)`: the principal's
  institution's jobs;
- `issue_export_download_url(session, store, settings, principal, export_id, expires_in)` → `ExportDownload`
  (a presigned GET, audited, only while the agreement is in force).

Who may export: members of the agreement's recipient institution, while the agreement is in force, for a
dataset version it covers. An agreement of another institution, and a version that is missing, hidden or not
covered, answer like missing ones (NotFound, same message). The requester's own agreement that has expired or
been revoked says so (`agreement_not_in_force`): the requester can see its agreements anyway. Coverage is
checked again when the job runs and when a URL is issued: revocation stops both at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pyarrow as pa
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.access.agreements import today
from cellcommons.access.models import Agreement, AgreementDataset, AgreementStatus
from cellcommons.audit.service import append
from cellcommons.auth.principal import Principal
from cellcommons.catalogue.enums import VersionStatus
from cellcommons.catalogue.models import DatasetVersion, Distribution, Institution
from cellcommons.errors import Conflict, InvalidInput, NotFound
from cellcommons.exports import filters
from cellcommons.exports.errors import AgreementNotInForce
from cellcommons.exports.models import BadRows, ExportJob, ExportStatus
from cellcommons.exports.policy import ColumnPlan, plan_columns
from cellcommons.exports.sources import CATALOGUE_COLUMNS, is_tabular
from cellcommons.settings import Settings
from cellcommons.storage import buckets
from cellcommons.storage.downloads import DEFAULT_EXPIRY, lifetime
from cellcommons.storage.object_store import ObjectStore

MAX_COLUMNS = 500


@dataclass(frozen=True)
class ExportDownload:
    export: ExportJob
    url: str
    expires_at: datetime


@dataclass(frozen=True)
class Scope:
    """What an export reads and under which terms, checked: the agreement, the version and the source."""

    agreement: Agreement
    version: DatasetVersion
    distribution: Distribution | None
    plans: list[ColumnPlan]


def _no_agreement() -> NotFound:
    return NotFound("no agreement with this id", field="agreementId")


def _no_version() -> NotFound:
    return NotFound("no dataset version with this id", field="datasetVersionId")


def _no_export() -> NotFound:
    return NotFound("no export with this id", field="id")


def require_in_force(agreement: Agreement, on: date | None = None) -> None:
    on = on or today()
    if agreement.revoked_at is not None or agreement.status is AgreementStatus.revoked:
        raise AgreementNotInForce("the agreement was revoked", field="agreementId")
    if agreement.status is AgreementStatus.expired or agreement.expires_on <= on:
        raise AgreementNotInForce(f"the agreement expired on {agreement.expires_on}", field="agreementId")
    if agreement.effective_on > on:
        raise AgreementNotInForce(f"the agreement takes effect on {agreement.effective_on}", field="agreementId")


async def _held_agreement(session: AsyncSession, principal: Principal | None, agreement_id: uuid.UUID) -> Agreement:
    agreement = await session.get(Agreement, agreement_id)
    if agreement is None or principal is None or agreement.recipient_institution_id != principal.institution_id:
        raise _no_agreement()
    return agreement


async def _covered_version(session: AsyncSession, agreement: Agreement, version_id: uuid.UUID) -> DatasetVersion:
    query = (
        select(DatasetVersion)
        .join(AgreementDataset, AgreementDataset.dataset_id == DatasetVersion.dataset_id)
        .where(
            DatasetVersion.id == version_id,
            AgreementDataset.agreement_id == agreement.id,
            DatasetVersion.status == VersionStatus.published,
            or_(agreement.covers_later_versions, DatasetVersion.published_at <= agreement.approved_at),
        )
    )
    version = await session.scalar(query)
    if version is None:
        raise _no_version()
    return version


async def _source(session: AsyncSession, version: DatasetVersion, distribution_id: uuid.UUID | None):
    if distribution_id is None:
        return None, CATALOGUE_COLUMNS
    distribution = await session.get(Distribution, distribution_id)
    if distribution is None or distribution.dataset_version_id != version.id:
        raise NotFound("no distribution with this id", field="distributionId")
    if not is_tabular(distribution.media_type, distribution.file_name):
        raise InvalidInput(f"{distribution.file_name} is not CSV or Parquet", field="distributionId")
    if distribution.storage_key is None:
        raise Conflict("this distribution has no uploaded file yet", field="distributionId")
    return distribution, distribution.columns


async def scope(
    session: AsyncSession,
    principal_institution: uuid.UUID | None,
    agreement: Agreement,
    version_id: uuid.UUID,
    distribution_id: uuid.UUID | None,
    columns: list[str] | None,
) -> Scope:
    """Check the agreement, the version it must cover and the source, and plan the columns."""
    if principal_institution != agreement.recipient_institution_id:
        raise _no_agreement()
    require_in_force(agreement)
    version = await _covered_version(session, agreement, version_id)
    distribution, declared = await _source(session, version, distribution_id)
    return Scope(agreement, version, distribution, plan_columns(declared, agreement.export_policy, columns))


async def request_export(
    session: AsyncSession,
    settings: Settings,
    principal: Principal | None,
    *,
    agreement_id: uuid.UUID,
    dataset_version_id: uuid.UUID,
    distribution_id: uuid.UUID | None = None,
    columns: list[str] | None = None,
    row_filter: list | None = None,
    bad_rows: BadRows = BadRows.fail,
) -> ExportJob:
    if columns is not None and not 1 <= len(columns) <= MAX_COLUMNS:
        raise InvalidInput(f"name 1 to {MAX_COLUMNS} columns, or none for every allowed column", field="columns")
    agreement = await _held_agreement(session, principal, agreement_id)
    checked = await scope(session, principal.institution_id, agreement, dataset_version_id, distribution_id, columns)
    schema = _schema(checked.plans)
    conditions = filters.validated(row_filter, schema, banded=[plan.name for plan in checked.plans if plan.banded])
    job = ExportJob(
        agreement_id=agreement.id, institution_id=principal.institution_id, requested_by=principal.actor,
        dataset_version_id=checked.version.id, distribution_id=distribution_id, columns=columns,
        row_filter=conditions, bad_rows=bad_rows, policy=[plan.describe() for plan in checked.plans],
        status=ExportStatus.queued,
    )  # fmt: skip
    session.add(job)
    await session.flush()
    await audit(session, job, principal.actor, "export.requested", {"columns": [p.name for p in checked.plans]})
    return job


def _schema(plans: list[ColumnPlan]) -> pa.Schema:
    return pa.schema([pa.field(plan.name, plan.output_type) for plan in plans])


async def audit(session: AsyncSession, job: ExportJob, actor: str, action: str, details: dict, **outcome) -> None:
    """Exports are audited in the provider's log (its stewards see who took what out under its agreements)."""
    provider = await session.scalar(
        select(Institution.slug).join(Agreement, Agreement.provider_institution_id == Institution.id)
        .where(Agreement.id == job.agreement_id)
    )  # fmt: skip
    details = {"agreement": str(job.agreement_id), "dataset_version": str(job.dataset_version_id), **details}
    await append(session, actor=actor, institution=provider, action=action, target=f"export:{job.id}",
                 details=details, **outcome)  # fmt: skip


async def get_export(session: AsyncSession, principal: Principal | None, export_id: uuid.UUID) -> ExportJob:
    job = await session.get(ExportJob, export_id)
    if job is None or principal is None or job.institution_id != principal.institution_id:
        raise _no_export()
    return job


async def list_exports(session: AsyncSession, principal: Principal | None, limit: int = 50) -> list[ExportJob]:
    if principal is None:
        return []
    query = (
        select(ExportJob)
        .where(ExportJob.institution_id == principal.institution_id)
        .order_by(ExportJob.created_at.desc(), ExportJob.id)
        .limit(limit)
    )
    return list(await session.scalars(query))


async def operator_listing(session: AsyncSession, export_id: uuid.UUID | None, limit: int) -> list[ExportJob]:
    """Every institution's jobs, for the operator's `cellcommons export status` (no principal: a shell on the
    platform's host already holds its database credentials)."""
    if export_id is not None:
        job = await session.get(ExportJob, export_id)
        if job is None:
            raise NotFound("no export with this id", field="export")
        return [job]
    return list(await session.scalars(select(ExportJob).order_by(ExportJob.created_at.desc()).limit(limit)))


async def issue_export_download_url(
    session: AsyncSession,
    store: ObjectStore,
    settings: Settings,
    principal: Principal | None,
    export_id: uuid.UUID,
    expires_in: int = DEFAULT_EXPIRY,
) -> ExportDownload:
    expiry = lifetime(expires_in)
    job = await get_export(session, principal, export_id)
    if job.status is not ExportStatus.succeeded:
        raise Conflict(f"the export is {job.status.value}; only a succeeded export has a file", field="id")
    require_in_force(await session.get_one(Agreement, job.agreement_id))
    await audit(session, job, principal.actor, "export.download_url_issued",
                {"sha256": job.sha256, "expires_in": int(expiry.total_seconds())})  # fmt: skip
    url = store.presign_get(buckets.exports_bucket(settings), job.result_key, expiry, file_name=file_name(job))
    return ExportDownload(export=job, url=url, expires_at=datetime.now(UTC) + expiry)


def file_name(job: ExportJob) -> str:
    return f"cellcommons-export-{job.id}.parquet"
