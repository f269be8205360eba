"""Sessions ended on the server (`portal_ended_session`): what sign-out writes and every signed-in request reads."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.portal.models import EndedSession
from cellcommons.portal.session import PortalSession


async def end_session(db: AsyncSession, session: PortalSession) -> None:
    """Sign-out: the session no longer signs anyone in, whoever holds a copy of its cookie. Ended sessions whose
    cookies have stopped working anyway are forgotten at the same time: the table holds at most the sign-outs of
    one session lifetime (8 hours), with no housekeeping job."""
    expires_at = datetime.fromtimestamp(session.expires_at, UTC)
    await db.execute(
        insert(EndedSession).values(session_id=session.session_id, expires_at=expires_at).on_conflict_do_nothing()
    )
    await forget_ended_sessions(db)


async def forget_ended_sessions(db: AsyncSession) -> None:
    await db.execute(delete(EndedSession).where(EndedSession.expires_at < datetime.now(UTC)))


async def has_ended(db: AsyncSession, session_id: str) -> bool:
    """One primary-key lookup, reading nothing but the key."""
    found = await db.scalar(select(EndedSession.session_id).where(EndedSession.session_id == session_id))
    return found is not None
