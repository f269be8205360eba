"""Portal sessions ended on the server: a signed-out session's cookie stops working even where a copy of it
survives (another browser, a proxy's log), not only in the browser that signed out."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from cellcommons.db import Base


class EndedSession(Base):
    """A session signed out before its end. Kept until `expires_at`, when its cookie would stop working anyway;
    only then may the row be forgotten (`repository.forget_ended_sessions`)."""

    __tablename__ = "portal_ended_session"

    # The random id the session's signed cookie carries; its primary key is the lookup every signed-in page does.
    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
