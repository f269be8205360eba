"""Sync queries: sources, runs, bookmarks, the record ledger, the quarantine and the per-source lock."""

from __future__ import annotations

import uuid
from collections.abc import Container, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from cellcommons.access.policy import not_found
from cellcommons.access.visibility import visible_sync_sources
from cellcommons.auth.principal import Principal
from cellcommons.errors import NotFound
from cellcommons.sync.bulk import copy_rows, insert_rows, keys_table, per_key
from cellcommons.sync.models import QuarantinedRecord, RunStatus, SyncBookmark, SyncRecord, SyncRun, SyncSource

ABSENT_CHUNK = 1000


async def source_by_name(session: AsyncSession, name: str) -> SyncSource:
    source = await session.scalar(select(SyncSource).where(SyncSource.name == name))
    if source is None:
        raise NotFound(f"no sync source {name!r}", field="source")
    return source


async def due_sources(session: AsyncSession, now: datetime) -> list[str]:
    """Enabled sources whose time has come and whose breaker is closed (or its cool-down is over)."""
    query = (
        select(SyncSource.name)
        .where(SyncSource.enabled, SyncSource.next_run_at <= now)
        .where((SyncSource.breaker_open_until.is_(None)) | (SyncSource.breaker_open_until <= now))
        .order_by(SyncSource.next_run_at)
    )
    return list(await session.scalars(query))


# ---- the per-source lock -----------------------------------------------------------------------------------

_LOCK_KEY = text("hashtextextended('cellcommons-sync:' || :source, 0)")


async def try_lock(connection: AsyncConnection, source_id: uuid.UUID) -> bool:
    """A session-level advisory lock on the source: one run at a time across every scheduler and CLI."""
    statement = select(func.pg_try_advisory_lock(_LOCK_KEY.bindparams(source=str(source_id))))
    return bool(await connection.scalar(statement))


async def unlock(connection: AsyncConnection, source_id: uuid.UUID) -> None:
    # Pooled connections outlive the run: release explicitly (a crashed process's lock dies with its connection).
    await connection.scalar(select(func.pg_advisory_unlock(_LOCK_KEY.bindparams(source=str(source_id)))))


# ---- bookmarks -----------------------------------------------------------------------------------------------


async def abandon_unfinished_runs(session: AsyncSession, source_id: uuid.UUID, now: datetime) -> None:
    """Runs of the source still marked running when its lock is free: their process stopped before it could
    finish them (killed, or the database went away). What they committed stays; the bookmark says where."""
    await session.execute(
        update(SyncRun)
        .where(SyncRun.source_id == source_id, SyncRun.status == RunStatus.running)
        .values(status=RunStatus.failed, finished_at=now, error=ABANDONED)
    )


ABANDONED = "its process stopped before it finished; the next run resumed from the bookmark"


async def bookmarks(session: AsyncSession, source_id: uuid.UUID) -> dict[str, SyncBookmark]:
    found = await session.scalars(select(SyncBookmark).where(SyncBookmark.source_id == source_id))
    return {b.stream: b for b in found}


async def save_bookmark(
    session: AsyncSession, source_id: uuid.UUID, stream: str, value: Any, snapshot_pass: uuid.UUID | None
) -> None:
    statement = pg_insert(SyncBookmark).values(
        source_id=source_id, stream=stream, value=value, snapshot_pass=snapshot_pass
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["source_id", "stream"],
            set_={"value": statement.excluded.value, "snapshot_pass": statement.excluded.snapshot_pass},
        )
    )


# ---- the ledger ------------------------------------------------------------------------------------------------


async def ledger(
    session: AsyncSession, source_id: uuid.UUID, stream: str, keys: Iterable[str]
) -> dict[str, tuple[datetime | None, str]]:
    def entry(key):
        return select(SyncRecord.record_key, SyncRecord.source_updated_at, SyncRecord.content_hash).where(
            SyncRecord.source_id == source_id, SyncRecord.stream == stream, SyncRecord.record_key == key
        )

    rows = (await session.execute(per_key(keys, entry))).all()  # fetched at once: iterating fetches row by row
    return {key: (stamp, content_hash) for key, stamp, content_hash in rows}


async def remember(
    session: AsyncSession, source_id: uuid.UUID, stream: str, entries: list[dict[str, Any]], known: Container[str]
) -> None:
    """entries: record_key, source_updated_at, content_hash, snapshot_pass; `known`: the keys the ledger holds
    (as `ledger` read them in this transaction; only this run writes the source's ledger: it holds the lock)."""
    rows = [{"source_id": source_id, "stream": stream, **e} for e in entries]
    await copy_rows(session, SyncRecord.__table__, [row for row in rows if row["record_key"] not in known])
    again = [row for row in rows if row["record_key"] in known]
    if again:
        statement = await insert_rows(session, SyncRecord.__table__, again)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["source_id", "stream", "record_key"],
                set_={c: statement.excluded[c] for c in ("source_updated_at", "content_hash", "snapshot_pass")},
            )
        )


def _ledger_keys(source_id: uuid.UUID, stream: str, keys: list[str]):
    """The source's ledger entries for `keys`, as a join with the keys (an index probe each, or one hash of the
    ledger): `record_key = ANY(keys)` was a filter comparing every ledger entry with every key, 0.7 s a page for a
    source of 50 000 records."""
    page = keys_table(keys)
    return SyncRecord.source_id == source_id, SyncRecord.stream == stream, SyncRecord.record_key == page.c.key


async def mark_seen(
    session: AsyncSession, source_id: uuid.UUID, stream: str, keys: list[str], snapshot_pass: uuid.UUID
) -> None:
    if keys:
        where = _ledger_keys(source_id, stream, keys)
        await session.execute(update(SyncRecord).where(*where).values(snapshot_pass=snapshot_pass))


async def forget(session: AsyncSession, source_id: uuid.UUID, stream: str, keys: Iterable[str]) -> None:
    keys = list(keys)
    if keys:
        await session.execute(delete(SyncRecord).where(*_ledger_keys(source_id, stream, keys)))


async def absent_keys(session: AsyncSession, source_id: uuid.UUID, stream: str, snapshot_pass: uuid.UUID) -> list[str]:
    """One chunk of the keys a completed snapshot pass did not see (the caller deletes them and asks again)."""
    query = (
        select(SyncRecord.record_key)
        .where(SyncRecord.source_id == source_id, SyncRecord.stream == stream)
        .where(SyncRecord.snapshot_pass.is_distinct_from(snapshot_pass))
        .order_by(SyncRecord.record_key)
        .limit(ABSENT_CHUNK)
    )
    return list(await session.scalars(query))


# ---- runs and quarantine ----------------------------------------------------------------------------------


async def add_counts(session: AsyncSession, run_id: uuid.UUID, **counts: int) -> None:
    columns = SyncRun.__table__.c
    values = {f"{name}_count": columns[f"{name}_count"] + n for name, n in counts.items() if n}
    if values:
        await session.execute(update(SyncRun).where(SyncRun.id == run_id).values(**values))


async def quarantine(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(pg_insert(QuarantinedRecord), rows)


async def open_quarantine(
    session: AsyncSession, source_id: uuid.UUID, after: uuid.UUID | None, limit: int
) -> list[QuarantinedRecord]:
    """Unresolved records, a keyset page by id (records that fail again stay behind the cursor)."""
    query = (
        select(QuarantinedRecord)
        .where(QuarantinedRecord.source_id == source_id, QuarantinedRecord.resolved_at.is_(None))
        .order_by(QuarantinedRecord.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(QuarantinedRecord.id > after)
    return list(await session.scalars(query))


async def resolve(session: AsyncSession, ids: list[uuid.UUID]) -> None:
    if ids:
        await session.execute(
            update(QuarantinedRecord).where(QuarantinedRecord.id.in_(ids)).values(resolved_at=func.now())
        )


async def runs_of(session: AsyncSession, source_name: str | None, limit: int) -> list[tuple[str, SyncRun]]:
    query = select(SyncSource.name, SyncRun).join(SyncSource, SyncSource.id == SyncRun.source_id)
    if source_name:
        query = query.where(SyncSource.name == source_name)
    return [tuple(row) for row in await session.execute(query.order_by(SyncRun.created_at.desc()).limit(limit))]


# ---- reading for a principal (GraphQL) ----------------------------------------------------------------------


async def visible_sources(session: AsyncSession, principal: Principal | None) -> list[SyncSource]:
    query = select(SyncSource).where(visible_sync_sources(principal, SyncSource)).order_by(SyncSource.name)
    return list(await session.scalars(query))


async def visible_source(session: AsyncSession, principal: Principal | None, name: str) -> SyncSource:
    """The source, or the same NotFound whether it is missing or hidden from the principal."""
    source = await session.scalar(
        select(SyncSource).where(SyncSource.name == name, visible_sync_sources(principal, SyncSource))
    )
    if source is None:
        raise not_found("sync source", repr(name))
    return source


def runs_query(source_id: uuid.UUID) -> Select:
    return select(SyncRun).where(SyncRun.source_id == source_id)


async def start_bookmarks(session: AsyncSession, source_name: str, run_id: str) -> dict[str, Any]:
    """Where a run of the source began (what replaying it reads from)."""
    try:
        key = uuid.UUID(run_id)
    except ValueError:
        raise NotFound(f"no run {run_id!r} of source {source_name!r}", field="run") from None
    source = await source_by_name(session, source_name)
    run = await session.scalar(select(SyncRun).where(SyncRun.id == key, SyncRun.source_id == source.id))
    if run is None:
        raise NotFound(f"no run {run_id!r} of source {source_name!r}", field="run")
    return run.start_bookmarks
