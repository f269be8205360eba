"""Downloads: short-lived presigned GETs for exactly one object, for principals the policy lets download.

Owners' stewards and submitters download; others need an active DUA covering the dataset version
(`access.agreements.covered_dataset_versions`, decided in the same statement: `storage.repository`). Anyone else
gets the same NotFound as for a file that does not exist. Every URL issuance appends an audit event in the
caller's transaction and the URL is returned only after it: if the append fails, no URL leaves. Revoking access
stops new URLs; a URL already issued works until it expires (at most 15 minutes), since S3 cannot recall a
signature.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.audit.service import record
from cellcommons.auth.principal import Principal
from cellcommons.catalogue.models import DatasetVersion, Distribution
from cellcommons.errors import Conflict, InvalidInput, NotFound
from cellcommons.observability import metrics
from cellcommons.settings import Settings
from cellcommons.storage import buckets, repository
from cellcommons.storage.object_store import ObjectStore

DEFAULT_EXPIRY = 300
MAX_EXPIRY = 900  # 15 minutes


@dataclass(frozen=True)
class DownloadLink:
    distribution: Distribution
    url: str
    expires_at: datetime


@dataclass(frozen=True)
class Manifest:
    version: DatasetVersion
    files: list[DownloadLink]
    expires_at: datetime


def lifetime(expires_in: int) -> timedelta:
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or not 1 <= expires_in <= MAX_EXPIRY:
        raise InvalidInput(f"must be a whole number of seconds from 1 to {MAX_EXPIRY}", field="expiresIn")
    return timedelta(seconds=expires_in)


def _no_distribution() -> NotFound:
    return NotFound("no distribution with this id", field="distributionId")


async def visible_file(
    session: AsyncSession, principal: Principal | None, distribution_id: uuid.UUID
) -> repository.FileView | None:
    """The file's metadata if the principal may see it, saying whether it may also download it."""
    return await repository.file_view(session, principal, distribution_id)


async def downloadable_files(
    session: AsyncSession, principal: Principal | None, distribution_ids: list[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of these files the principal may download now (uploaded, and allowed), for a page's buttons."""
    targets = await repository.download_targets(session, principal, distribution_ids)
    return {t.distribution.id for t in targets if t.distribution.storage_key}


async def file_for_download(
    session: AsyncSession, principal: Principal | None, distribution_id: uuid.UUID
) -> repository.DownloadTarget:
    """The file, if the principal may download it; NotFound alike for missing, hidden and not allowed."""
    target = await repository.download_target(session, principal, distribution_id)
    if target is None:
        raise _no_distribution()
    if target.distribution.storage_key is None:
        raise Conflict("this distribution has no uploaded file yet", field="distributionId")
    return target


async def issue_download_url(
    session: AsyncSession,
    store: ObjectStore,
    settings: Settings,
    principal: Principal | None,
    distribution_id: uuid.UUID,
    expires_in: int = DEFAULT_EXPIRY,
) -> DownloadLink:
    expiry = lifetime(expires_in)
    target = await file_for_download(session, principal, distribution_id)
    # Signed before the audit append, which holds the chain head until the commit; it leaves only afterwards.
    link = _link(store, settings, target.custodian_id, target.distribution, expiry)
    await record(
        session,
        actor=principal.actor,
        institution=target.custodian_slug,
        action="file.download_url_issued",
        target=f"distribution:{target.distribution.id}",
        details=_issued(principal, expiry, [target.distribution]),
    )
    return link


async def download_manifest(
    session: AsyncSession,
    store: ObjectStore,
    settings: Settings,
    principal: Principal | None,
    version_id: uuid.UUID,
    expires_in: int = DEFAULT_EXPIRY,
) -> Manifest:
    """A URL, size and SHA-256 for every uploaded file of the version, for scripted and resumable downloads."""
    expiry = lifetime(expires_in)
    found = await repository.downloadable_version(session, principal, version_id)
    if found is None:
        raise NotFound("no dataset version with this id", field="datasetVersionId")
    version, custodian_id, custodian_slug = found
    files = await repository.stored_files(session, version.id)
    links = [_link(store, settings, custodian_id, f, expiry) for f in files]
    await record(
        session,
        actor=principal.actor,
        institution=custodian_slug,
        action="file.manifest_issued",
        target=f"dataset_version:{version.id}",
        details=_issued(principal, expiry, files),
    )
    return Manifest(version=version, files=links, expires_at=datetime.now(UTC) + expiry)


def _issued(principal: Principal, expiry: timedelta, files: list[Distribution]) -> dict:
    """What the audit event records: never a URL or a storage key."""
    return {
        "requester_institution": principal.institution_slug,
        "expires_in": int(expiry.total_seconds()),
        "files": [{"distribution": str(f.id), "file_name": f.file_name, "sha256": f.sha256} for f in files],
    }


def _link(
    store: ObjectStore, settings: Settings, custodian_id: uuid.UUID, distribution: Distribution, expiry: timedelta
) -> DownloadLink:
    bucket = buckets.institution_bucket(settings, custodian_id)
    url = store.presign_get(bucket, distribution.storage_key, expiry, file_name=distribution.file_name)
    metrics.url_issued()  # the count only; the URL itself is a credential and is never logged
    return DownloadLink(distribution=distribution, url=url, expires_at=datetime.now(UTC) + expiry)
