"""Notifications recorded as rows (new request, clarification, decision, agreement expiring or revoked), for
the portal and a mail hook to show."""

from __future__ import annotations

import uuid

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.access.models import Agreement, Notification, NotificationKind


async def notify(
    session: AsyncSession,
    kind: NotificationKind,
    institution_id: uuid.UUID,
    message: str,
    *,
    subject: str | None = None,
    request_id: uuid.UUID | None = None,
    agreement_id: uuid.UUID | None = None,
) -> None:
    """For one person when `subject` is given, else for the institution's stewards."""
    session.add(
        Notification(
            kind=kind, institution_id=institution_id, subject=subject, request_id=request_id,
            agreement_id=agreement_id, message=message,
        )
    )  # fmt: skip
    await session.flush()


async def warn_expiring(session: AsyncSession, agreement: Agreement) -> bool:
    """Tell the recipient once that the agreement ends soon, however often the sweep runs; True if told now."""
    message = f"data-use agreement {agreement.id} expires on {agreement.expires_on.isoformat()}"
    table = Notification.__table__
    statement = (
        insert(table)
        .values(
            kind=NotificationKind.agreement_expiring, institution_id=agreement.recipient_institution_id,
            subject=agreement.recipient_subject, agreement_id=agreement.id, request_id=agreement.request_id,
            message=message,
        )
        .on_conflict_do_nothing(
            index_elements=["agreement_id"], index_where=table.c.kind == NotificationKind.agreement_expiring
        )
        .returning(table.c.id)
    )  # fmt: skip
    return (await session.execute(statement)).first() is not None
