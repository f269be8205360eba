"""Audit log tables: the append-only, hash-chained events and the one-row chain head that serialises appends.

Append-only is enforced by PostgreSQL (migration 0002): the application role has no UPDATE, DELETE or
TRUNCATE on `audit_event`, and triggers refuse those for every role, the owner included.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime, SmallInteger, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cellcommons.db import Base

GENESIS_HASH = "0" * 64
HEAD_ROW_ID = 1


class Outcome(StrEnum):
    success = "success"
    denied = "denied"
    failure = "failure"


class AuditEvent(Base):
    """One recorded action. `id` is the event's position in the chain (1, 2, 3, … without gaps)."""

    __tablename__ = "audit_event"
    __table_args__ = (
        CheckConstraint("id > 0", name="id_positive"),
        CheckConstraint("outcome IN ('success', 'denied', 'failure')", name="outcome"),
    )

    # Assigned from the chain head under its row lock, never from a sequence: sequences leave gaps on rollback.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(255))
    institution: Mapped[str | None] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str | None] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    """The chain's last position and hash; appends lock this single row, so the chain never forks."""

    __tablename__ = "audit_chain_head"
    __table_args__ = (CheckConstraint(f"id = {HEAD_ROW_ID}", name="single_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
