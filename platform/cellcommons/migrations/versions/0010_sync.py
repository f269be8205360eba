"""Sync: sources with schedules and sealed secrets, runs, bookmarks, the record ledger and the quarantine.

Revision ID: 0010
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_source",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("connector", sa.String(length=60), nullable=False),
        sa.Column("institution_id", sa.UUID(), nullable=False),
        sa.Column(
            "config", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("sealed_secrets", sa.Text(), nullable=True),
        sa.Column("schedule", sa.String(length=100), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("breaker_open_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("name ~ '^[a-z][a-z0-9-]{1,59}$'", name=op.f("ck_sync_source_name_form")),
        sa.CheckConstraint("consecutive_failures >= 0", name=op.f("ck_sync_source_failures_non_negative")),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institution.id"],
            name=op.f("fk_sync_source_institution_id_institution"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_source")),
        sa.UniqueConstraint("name", name=op.f("uq_sync_source_name")),
    )
    op.create_index(op.f("ix_sync_source_institution_id"), "sync_source", ["institution_id"], unique=False)
    op.create_index(op.f("ix_sync_source_next_run_at"), "sync_source", ["next_run_at"], unique=False)
    op.create_table(
        "sync_bookmark",
        sa.Column("source_id", sa.UUID(), nullable=False),
        sa.Column("stream", sa.String(length=60), nullable=False),
        sa.Column("value", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("snapshot_pass", sa.UUID(), nullable=True),
        sa.ForeignKeyConstraint(
            ["source_id"], ["sync_source.id"], name=op.f("fk_sync_bookmark_source_id_sync_source"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("source_id", "stream", name=op.f("pk_sync_bookmark")),
    )
    op.create_table(
        "sync_record",
        sa.Column("source_id", sa.UUID(), nullable=False),
        sa.Column("stream", sa.String(length=60), nullable=False),
        sa.Column("record_key", sa.String(length=200), nullable=False),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("snapshot_pass", sa.UUID(), nullable=True),
        sa.ForeignKeyConstraint(
            ["source_id"], ["sync_source.id"], name=op.f("fk_sync_record_source_id_sync_source"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("source_id", "stream", "record_key", name=op.f("pk_sync_record")),
    )
    op.create_table(
        "sync_run",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("source_id", sa.UUID(), nullable=False),
        sa.Column("trigger", sa.Enum("schedule", "manual", "replay", name="sync_run_trigger"), nullable=False),
        sa.Column("status", sa.Enum("running", "ok", "partial", "failed", name="sync_run_status"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("upserted_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("quarantined_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("deleted_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "start_bookmarks",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["source_id"], ["sync_source.id"], name=op.f("fk_sync_run_source_id_sync_source"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_run")),
    )
    op.create_index("ix_sync_run_source_id_created_at", "sync_run", ["source_id", "created_at"], unique=False)
    op.create_table(
        "sync_quarantine",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("source_id", sa.UUID(), nullable=False),
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("stream", sa.String(length=60), nullable=False),
        sa.Column("record_key", sa.String(length=200), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("errors", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["sync_run.id"], name=op.f("fk_sync_quarantine_run_id_sync_run"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["source_id"], ["sync_source.id"], name=op.f("fk_sync_quarantine_source_id_sync_source"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_quarantine")),
    )
    op.create_index(
        "ix_sync_quarantine_open",
        "sync_quarantine",
        ["source_id", "created_at"],
        unique=False,
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.create_index(op.f("ix_sync_quarantine_run_id"), "sync_quarantine", ["run_id"], unique=False)


def downgrade() -> None:
    for table in ("sync_quarantine", "sync_run", "sync_record", "sync_bookmark", "sync_source"):
        op.drop_table(table)
    sa.Enum(name="sync_run_status").drop(op.get_bind())
    sa.Enum(name="sync_run_trigger").drop(op.get_bind())
