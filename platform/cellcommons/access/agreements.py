"""What data-use agreements grant: the dataset versions a principal may download and export.

An agreement is in force while its status is `active`, its term has begun and not ended (`effective_on` ≤
today < `expires_on`) and it was not revoked: expiry and revocation stop new URLs and exports at once, without
waiting for the sweep that marks agreements expired. The recipient party is the requester's institution, so
every member of it (and its machine clients, for exports) is covered. An agreement covers the versions of its
datasets published when it was approved, later ones only when its terms say so (DOMAIN.md).
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.access.models import Agreement, AgreementDataset, AgreementStatus
from cellcommons.auth.principal import Principal
from cellcommons.catalogue.enums import VersionStatus
from cellcommons.catalogue.models import DatasetVersion


def today() -> date:
    return datetime.now(UTC).date()


def in_force(on: date, agreement: type[Agreement] = Agreement) -> ColumnElement[bool]:
    return and_(
        agreement.status == AgreementStatus.active,
        agreement.revoked_at.is_(None),
        agreement.effective_on <= on,
        agreement.expires_on > on,
    )


def is_in_force(agreement: Agreement, on: date | None = None) -> bool:
    """`in_force` for an agreement already loaded."""
    on = on or today()
    return (
        agreement.status is AgreementStatus.active
        and agreement.revoked_at is None
        and agreement.effective_on <= on < agreement.expires_on
    )


async def covered_dataset_versions(
    session: AsyncSession, principal: Principal | None, *, on: date | None = None
) -> set[uuid.UUID]:
    """The dataset versions that agreements in force for the principal's institution (as recipient) cover."""
    if principal is None:
        return set()
    query = (
        select(DatasetVersion.id)
        .join(AgreementDataset, AgreementDataset.dataset_id == DatasetVersion.dataset_id)
        .join(Agreement, Agreement.id == AgreementDataset.agreement_id)
        .where(
            Agreement.recipient_institution_id == principal.institution_id,
            in_force(on or today()),
            DatasetVersion.status == VersionStatus.published,
            or_(Agreement.covers_later_versions, DatasetVersion.published_at <= Agreement.approved_at),
        )
        .distinct()
    )
    return set(await session.scalars(query))
