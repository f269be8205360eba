"""Uploads in progress: declared checksum and size, staging key, outcome (issue 10).

Revision ID: 0008
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0005"
branch_labels = None
depends_on = None

UPLOAD_STATUS = sa.Enum("pending", "completed", "rejected", name="upload_status")


def upgrade() -> None:
    op.create_table(
        "file_upload",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("distribution_id", sa.UUID(), nullable=False),
        sa.Column("institution_id", sa.UUID(), nullable=False),
        sa.Column("requested_by", sa.String(length=255), nullable=False),
        sa.Column("declared_sha256", sa.String(length=64), nullable=False),
        sa.Column("declared_size", sa.BigInteger(), nullable=False),
        sa.Column("staging_key", sa.String(length=1024), nullable=False),
        sa.Column("status", UPLOAD_STATUS, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("url_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("declared_sha256 ~ '^[0-9a-f]{64}$'", name=op.f("ck_file_upload_sha256_hex")),
        sa.CheckConstraint("declared_size >= 0", name=op.f("ck_file_upload_size_non_negative")),
        sa.CheckConstraint(
            "(status = 'pending') = (finished_at IS NULL)", name=op.f("ck_file_upload_finished_iff_not_pending")
        ),
        sa.ForeignKeyConstraint(
            ["distribution_id"],
            ["distribution.id"],
            name=op.f("fk_file_upload_distribution_id_distribution"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institution.id"],
            name=op.f("fk_file_upload_institution_id_institution"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_file_upload")),
    )
    op.create_index(op.f("ix_file_upload_distribution_id"), "file_upload", ["distribution_id"], unique=False)
    op.create_index(op.f("ix_file_upload_institution_id"), "file_upload", ["institution_id"], unique=False)


def downgrade() -> None:
    op.drop_table("file_upload")
    UPLOAD_STATUS.drop(op.get_bind())
