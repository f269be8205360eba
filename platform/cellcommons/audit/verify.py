"""Verifying the audit chain, and writing checkpoints of a verified head to object storage.

The walk streams events in seq order through a server-side cursor, so memory stays constant whatever the
log's length, and stops at the first broken event.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.audit.models import GENESIS_HASH, HEAD_ROW_ID, AuditChainHead, AuditEvent
from cellcommons.audit.service import canonical_json, event_hash, timestamp
from cellcommons.db import make_engine
from cellcommons.errors import Unavailable
from cellcommons.migrations import describe
from cellcommons.settings import Settings
from cellcommons.storage import ObjectStore

BATCH = 1000
_EVENT_COLUMNS = [getattr(AuditEvent, c.key) for c in AuditEvent.__table__.columns]


@dataclass(frozen=True)
class Verification:
    count: int  # events verified before the first broken one (all of them when intact)
    head_seq: int
    head_hash: str
    broken_seq: int | None = None  # the chain position where it breaks
    broken_id: int | None = None  # the event found there, if any
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.intact:
            return f"audit chain intact: {self.count} events, head seq {self.head_seq}, hash {self.head_hash}"
        where = f"seq {self.broken_seq}" + (f" (event id {self.broken_id})" if self.broken_id is not None else "")
        return f"audit chain BROKEN at {where}: {self.problem}; {self.count} events before it verified"


async def verify(session: AsyncSession, batch: int = BATCH) -> Verification:
    """Recompute every hash, check the prev links, contiguous seq and the head.

    Run it in one REPEATABLE READ transaction (`verify_database` does) when appends may happen meanwhile,
    so that the head and the events come from the same snapshot.
    """
    head = (
        await session.execute(select(AuditChainHead.seq, AuditChainHead.hash).where(AuditChainHead.id == HEAD_ROW_ID))
    ).one_or_none()
    if head is None:
        return Verification(0, 0, GENESIS_HASH, broken_seq=0, problem="the chain head row is missing")
    expected, prev = 1, GENESIS_HASH
    rows = await session.stream(select(*_EVENT_COLUMNS).order_by(AuditEvent.id).execution_options(yield_per=batch))
    async for row in rows:
        problem = _problem(row, expected, prev)
        if problem:
            await rows.close()
            return Verification(
                expected - 1, head.seq, head.hash, broken_seq=expected, broken_id=row.id, problem=problem
            )
        expected, prev = expected + 1, row.hash
    last = expected - 1
    if (head.seq, head.hash) != (last, prev):
        return _head_disagrees(head, last, prev)
    return Verification(last, head.seq, head.hash)


def _head_disagrees(head, last: int, prev: str) -> Verification:
    problem = f"the chain head says seq {head.seq} with hash {head.hash}, but the chain ends at seq {last}"
    if head.seq < last:
        # Events the head does not account for were not appended through it: the break is the first of them.
        beyond = f"event {last}" if head.seq + 1 == last else f"events {head.seq + 1}–{last}"
        problem += f" ({beyond} beyond the head)"
        return Verification(head.seq, head.seq, head.hash, broken_seq=head.seq + 1, broken_id=head.seq + 1,
                            problem=problem)  # fmt: skip
    if head.seq > last:
        problem += f" with hash {prev} (event {last + 1} onwards missing)"
    return Verification(last, head.seq, head.hash, broken_seq=last + 1, problem=problem)


def _problem(row, expected: int, prev: str) -> str | None:
    if row.id != expected:
        missing = f"event {expected}" if row.id == expected + 1 else f"events {expected}–{row.id - 1}"
        return f"{missing} missing: the next event present is id {row.id}"
    if row.prev_hash != prev:
        return f"prev_hash {row.prev_hash} does not match the hash of seq {expected - 1} ({prev})"
    fields = {k: getattr(row, k) for k in ("occurred_at", "actor", "institution", "action", "target", "outcome")}
    if event_hash(row.prev_hash, seq=row.id, details=row.details, **fields) != row.hash:
        return "its stored hash does not match its contents (altered after it was written)"
    return None


async def verify_database(settings: Settings) -> Verification:
    """Verify the chain as the application role, in one read-only snapshot."""
    engine = make_engine(settings.app_url)
    where = describe(settings.app_url)
    try:
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            async with AsyncSession(bind=connection) as session:
                return await verify(session)
    except OperationalError as exc:
        raise Unavailable(f"cannot reach the database at {where}: {_reason(exc)}") from None
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == "42P01":  # undefined_table
            raise Unavailable(f"no audit log in the database at {where}: run `cellcommons migrate`") from None
        raise
    finally:
        await engine.dispose()


def _reason(exc: DBAPIError) -> str:
    return " ".join(line.strip() for line in str(exc.orig or exc).splitlines() if line.strip())


def write_checkpoint(store: ObjectStore, bucket: str, verified: Verification, now: datetime | None = None) -> str:
    """Store {count, head seq, head hash, time} of an intact chain; returns the object's key.

    Kept outside the database, a checkpoint lets a later audit notice a chain rewritten from an earlier point.
    """
    if not verified.intact:
        raise ValueError("only an intact chain is checkpointed")
    verified_at = timestamp(now or datetime.now(UTC))
    body = canonical_json(
        {
            "count": verified.count,
            "head_seq": verified.head_seq,
            "head_hash": verified.head_hash,
            "verified_at": verified_at,
        }
    )
    key = f"checkpoints/{verified_at.replace(':', '')}-seq{verified.head_seq}.json"
    store.ensure_bucket(bucket)
    store.put_stream(bucket, key, io.BytesIO(body), len(body), content_type="application/json")
    return key
