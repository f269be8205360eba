"""Export jobs: one row per requested Parquet export, from request to result.

Why a table and not a queue: the job is the record a researcher and a steward look at (status, progress, the
error naming line and column, the result's SHA-256), and PostgreSQL is the only moving part the platform has.
Workers claim rows with `FOR UPDATE SKIP LOCKED` and hold a lease (`lease_expires_at`) they renew while they
work; a worker that dies stops renewing, and the next claim takes the job again (`attempts` counts the tries,
so a job that kills every worker stops being retried). `result_key` is internal and never shown.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from cellcommons.catalogue.models import pg_enum
from cellcommons.db import Base


class ExportStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class BadRows(StrEnum):
    """What a malformed source row does: fail the job naming line and column, or set the row aside."""

    fail = "fail"
    quarantine = "quarantine"


class ExportJob(Base):
    __tablename__ = "export_job"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    agreement_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("data_use_agreement.id", ondelete="RESTRICT"), index=True
    )
    institution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("institution.id", ondelete="RESTRICT"), index=True)
    requested_by: Mapped[str] = mapped_column(String(255))  # the audit log's actor
    dataset_version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dataset_version.id", ondelete="RESTRICT"))
    # A tabular distribution of the version; None: the catalogue's batches with their QC results, flattened.
    distribution_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("distribution.id", ondelete="RESTRICT"))
    columns: Mapped[list[str] | None] = mapped_column(ARRAY(String(120)))  # None: every allowed column
    row_filter: Mapped[list] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    bad_rows: Mapped[BadRows] = mapped_column(pg_enum(BadRows, "export_bad_rows"))
    policy: Mapped[list] = mapped_column(JSONB)  # the column plan: name, tag, treatment, output type
    status: Mapped[ExportStatus] = mapped_column(pg_enum(ExportStatus, "export_status"), index=True)
    rows_written: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    bytes_written: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    rows_quarantined: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # The first rows set aside under `quarantine`, with line, column and reason.
    quarantine: Mapped[list] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    error_code: Mapped[str | None] = mapped_column(String(60))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_field: Mapped[str | None] = mapped_column(String(200))
    result_key: Mapped[str | None] = mapped_column(String(1024))
    sha256: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("(status = 'succeeded') = (sha256 IS NOT NULL AND result_key IS NOT NULL)", name="result"),
        CheckConstraint("(status = 'failed') = (error_code IS NOT NULL)", name="failure_has_code"),
        CheckConstraint("(status = 'running') = (lease_owner IS NOT NULL)", name="running_has_lease"),
        CheckConstraint("rows_written >= 0 AND bytes_written >= 0 AND attempts >= 0", name="counts_non_negative"),
        Index("ix_export_job_claimable", "created_at", postgresql_where=text("status IN ('queued', 'running')")),
    )
