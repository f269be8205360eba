"""Sync tables: sources with their schedules, runs, bookmarks, the record ledger and the quarantine.

The ledger (`sync_record`) remembers, per source and stream, each natural key's source timestamp, a hash of
what was written and the snapshot pass that last saw it: it makes upserts idempotent ("newer wins", identical
content skipped) and lets a full-snapshot stream find absent records without holding anything in memory.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from cellcommons.catalogue.models import pg_enum
from cellcommons.db import Base


class RunStatus(StrEnum):
    running = "running"
    ok = "ok"  # every record landed
    partial = "partial"  # finished, some records quarantined
    failed = "failed"  # stopped early; what was committed before stays, the bookmark says where
    interrupted = "interrupted"  # its process was shut down: stopped after a committed page, resumed next run


class RunTrigger(StrEnum):
    schedule = "schedule"
    manual = "manual"
    replay = "replay"


class SyncSource(Base):
    __tablename__ = "sync_source"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(60), unique=True)
    connector: Mapped[str] = mapped_column(String(60))
    institution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("institution.id", ondelete="RESTRICT"), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # Secrets are AES-GCM sealed under a key derived from settings.secret_key (sync/secrets.py), never in clear.
    sealed_secrets: Mapped[str | None] = mapped_column(Text)
    schedule: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(server_default=text("true"))
    next_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    # The circuit breaker: consecutive failed runs; while open, the scheduler leaves the source alone.
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    breaker_open_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("name ~ '^[a-z][a-z0-9-]{1,59}$'", name="name_form"),
        CheckConstraint("consecutive_failures >= 0", name="failures_non_negative"),
    )


class SyncRun(Base):
    __tablename__ = "sync_run"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    source_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sync_source.id", ondelete="CASCADE"))
    trigger: Mapped[RunTrigger] = mapped_column(pg_enum(RunTrigger, "sync_run_trigger"))
    status: Mapped[RunStatus] = mapped_column(pg_enum(RunStatus, "sync_run_status"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())  # started
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    read_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    upserted_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    quarantined_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    deleted_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    error: Mapped[str | None] = mapped_column(Text)
    # Where each stream stood when the run began: replaying the run reads from here again.
    start_bookmarks: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))

    __table_args__ = (Index("ix_sync_run_source_id_created_at", "source_id", "created_at"),)


class SyncBookmark(Base):
    __tablename__ = "sync_bookmark"

    source_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sync_source.id", ondelete="CASCADE"), primary_key=True)
    stream: Mapped[str] = mapped_column(String(60), primary_key=True)
    value: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # A full-snapshot stream's current pass: records seen in it survive; the others go once the pass completes.
    snapshot_pass: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))


class SyncRecord(Base):
    __tablename__ = "sync_record"

    source_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sync_source.id", ondelete="CASCADE"), primary_key=True)
    stream: Mapped[str] = mapped_column(String(60), primary_key=True)
    record_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    source_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    content_hash: Mapped[str] = mapped_column(String(64))
    snapshot_pass: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))


class QuarantinedRecord(Base):
    __tablename__ = "sync_quarantine"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    source_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sync_source.id", ondelete="CASCADE"))
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sync_run.id", ondelete="CASCADE"), index=True)
    stream: Mapped[str] = mapped_column(String(60))
    record_key: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[Any] = mapped_column(JSONB)  # the raw record as the connector read it
    source_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted: Mapped[bool] = mapped_column(server_default=text("false"))  # a tombstone that could not apply
    errors: Mapped[list[Any]] = mapped_column(JSONB)  # findings: code, field, message
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # landed on a later replay

    __table_args__ = (
        Index("ix_sync_quarantine_open", "source_id", "created_at", postgresql_where=text("resolved_at IS NULL")),
    )
