"""Exports: the export job table (status, progress, error, result, lease).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "export_job",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("agreement_id", sa.UUID(), nullable=False),
        sa.Column("institution_id", sa.UUID(), nullable=False),
        sa.Column("requested_by", sa.String(length=255), nullable=False),
        sa.Column("dataset_version_id", sa.UUID(), nullable=False),
        sa.Column("distribution_id", sa.UUID(), nullable=True),
        sa.Column("columns", sa.ARRAY(sa.String(length=120)), nullable=True),
        sa.Column(
            "row_filter", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.Column("bad_rows", sa.Enum("fail", "quarantine", name="export_bad_rows"), nullable=False),
        sa.Column("policy", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.Enum("queued", "running", "succeeded", "failed", name="export_status"), nullable=False),
        sa.Column("rows_written", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("bytes_written", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("rows_quarantined", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "quarantine", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.Column("error_code", sa.String(length=60), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_field", sa.String(length=200), nullable=True),
        sa.Column("result_key", sa.String(length=1024), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(status = 'succeeded') = (sha256 IS NOT NULL AND result_key IS NOT NULL)",
            name=op.f("ck_export_job_result"),
        ),
        sa.CheckConstraint(
            "(status = 'failed') = (error_code IS NOT NULL)", name=op.f("ck_export_job_failure_has_code")
        ),
        sa.CheckConstraint(
            "(status = 'running') = (lease_owner IS NOT NULL)", name=op.f("ck_export_job_running_has_lease")
        ),
        sa.CheckConstraint(
            "rows_written >= 0 AND bytes_written >= 0 AND attempts >= 0", name=op.f("ck_export_job_counts_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["agreement_id"],
            ["data_use_agreement.id"],
            name=op.f("fk_export_job_agreement_id_data_use_agreement"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institution.id"],
            name=op.f("fk_export_job_institution_id_institution"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_version.id"],
            name=op.f("fk_export_job_dataset_version_id_dataset_version"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["distribution_id"],
            ["distribution.id"],
            name=op.f("fk_export_job_distribution_id_distribution"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_export_job")),
    )
    op.create_index(op.f("ix_export_job_agreement_id"), "export_job", ["agreement_id"], unique=False)
    op.create_index(op.f("ix_export_job_institution_id"), "export_job", ["institution_id"], unique=False)
    op.create_index(op.f("ix_export_job_status"), "export_job", ["status"], unique=False)
    op.create_index(
        "ix_export_job_claimable",
        "export_job",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )


def downgrade() -> None:
    op.drop_table("export_job")
    sa.Enum(name="export_status").drop(op.get_bind())
    sa.Enum(name="export_bad_rows").drop(op.get_bind())
