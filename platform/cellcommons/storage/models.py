"""Uploads in progress: what a submitter declared, where the bytes wait, and how the upload ended."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, String, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from cellcommons.catalogue.models import pg_enum
from cellcommons.db import Base


class UploadStatus(StrEnum):
    pending = "pending"  # a presigned PUT was issued; nothing verified yet
    completed = "completed"  # verified and moved into place; the distribution records it
    rejected = "rejected"  # the bytes did not match the declaration; they were deleted
    aborted = "aborted"  # the submitter abandoned it; whatever was sent was deleted
    expired = "expired"  # never completed: the staging cleanup deleted what was sent (`storage.cleanup`)


class FileUpload(Base):
    """One upload of one distribution's file. `staging_key` is internal and never shown."""

    __tablename__ = "file_upload"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    distribution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("distribution.id", ondelete="CASCADE"), index=True)
    # The uploader's institution: whose bucket holds the bytes, and who may complete the upload.
    institution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("institution.id", ondelete="RESTRICT"), index=True)
    requested_by: Mapped[str] = mapped_column(String(255))  # the audit log's actor
    declared_sha256: Mapped[str] = mapped_column(String(64))
    declared_size: Mapped[int] = mapped_column(BigInteger)
    staging_key: Mapped[str] = mapped_column(String(1024))
    status: Mapped[UploadStatus] = mapped_column(pg_enum(UploadStatus, "upload_status"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # When the last URL handed out for it expires (re-signed part URLs move it): its last sign of life.
    url_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A multipart upload's S3 UploadId (internal, never shown) and its part size; NULL for a single PUT.
    multipart_id: Mapped[str | None] = mapped_column(String(1024))
    part_size: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("declared_sha256 ~ '^[0-9a-f]{64}$'", name="sha256_hex"),
        CheckConstraint("declared_size >= 0", name="size_non_negative"),
        CheckConstraint("(status = 'pending') = (finished_at IS NULL)", name="finished_iff_not_pending"),
        CheckConstraint("(multipart_id IS NULL) = (part_size IS NULL)", name="multipart_has_part_size"),
        # What the staging cleanup looks for: pending uploads whose last URL expired long ago.
        Index("ix_file_upload_pending_url_expires_at", "url_expires_at", postgresql_where=text("status = 'pending'")),
    )
