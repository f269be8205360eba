"""Idempotency keys for create requests: a retried request gets the first one's result, not a duplicate record.

A key belongs to one actor (`Principal.actor`); the same key from another actor is another key. Its row is
inserted before the work, with ON CONFLICT DO NOTHING, so a concurrent request with the same key waits for the
first request's transaction: if that committed, the second finds the row and replays its result; if it rolled
back (a rejected input), the key is free again. Only successes are therefore remembered. Keys are kept
indefinitely (no expiry yet).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, String, func, select, update
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from cellcommons.audit.service import canonical_json
from cellcommons.db import Base
from cellcommons.errors import Conflict, InvalidInput

KEY = re.compile(r"[A-Za-z0-9._:-]{8,200}")


class IdempotencyKey(Base):
    __tablename__ = "idempotency_key"

    actor: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    operation: Mapped[str] = mapped_column(String(60))
    request_hash: Mapped[str] = mapped_column(String(64))
    record_type: Mapped[str | None] = mapped_column(String(40))
    record_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


@dataclass(frozen=True)
class Remembered:
    """The record the first request with this key produced."""

    record_type: str
    record_id: uuid.UUID


def _request_hash(operation: str, request: Any) -> str:
    return hashlib.sha256(canonical_json({"operation": operation, "request": request})).hexdigest()


async def claim(session: AsyncSession, actor: str, key: str, operation: str, request: Any) -> Remembered | None:
    """Take `key` for this request (None: go ahead), or the result of the earlier request that took it.

    `request` is the request's content as JSON; the same key with other content is a Conflict."""
    if not KEY.fullmatch(key):
        raise InvalidInput("must be 8-200 characters: letters, digits, '.', '_', ':' or '-'", field="idempotency_key")
    digest = _request_hash(operation, request)
    taken = await session.scalar(
        insert(IdempotencyKey)
        .values(actor=actor, key=key, operation=operation, request_hash=digest)
        .on_conflict_do_nothing()
        .returning(IdempotencyKey.key)
    )
    if taken is not None:
        return None
    earlier = (
        await session.execute(select(IdempotencyKey).where(IdempotencyKey.actor == actor, IdempotencyKey.key == key))
    ).scalar_one()
    if earlier.operation != operation or earlier.request_hash != digest:
        raise Conflict("this idempotency key was used for a different request", field="idempotency_key")
    return Remembered(earlier.record_type, earlier.record_id)


async def remember(session: AsyncSession, actor: str, key: str, record_type: str, record_id: uuid.UUID) -> None:
    await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.actor == actor, IdempotencyKey.key == key)
        .values(record_type=record_type, record_id=record_id)
    )
