"""The change feed (every create, update and delete of catalogue records, with its transaction id) and the
idempotency keys of create mutations.

Revision ID: 0007
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from cellcommons.migrations import app_role

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalogue_change",
        sa.Column("seq", sa.BigInteger(), autoincrement=True, nullable=False),
        # The writing transaction's xid8 as a number: the feed's order and its watermark (catalogue/changes.py).
        sa.Column(
            "xid", sa.BigInteger(), server_default=sa.text("(pg_current_xact_id()::text)::bigint"), nullable=False
        ),
        sa.Column("record_type", sa.String(length=40), nullable=False),
        sa.Column("record_id", sa.UUID(), nullable=False),
        sa.Column("institution_id", sa.UUID(), nullable=False),
        sa.Column("operation", sa.String(length=6), nullable=False),
        sa.Column("origin_node", sa.String(length=80), nullable=False),
        sa.Column("shared", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "operation IN ('create', 'update', 'delete')", name=op.f("ck_catalogue_change_operation_known")
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institution.id"],
            name=op.f("fk_catalogue_change_institution_id_institution"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_catalogue_change")),
    )
    op.create_index("ix_catalogue_change_xid_seq", "catalogue_change", ["xid", "seq"], unique=False)
    op.create_index("ix_catalogue_change_record_id", "catalogue_change", ["record_id"], unique=False)
    # The log is history: rows are added, never rewritten.
    op.execute(f'REVOKE UPDATE, DELETE, TRUNCATE ON catalogue_change FROM "{app_role()}"')

    op.create_table(
        "idempotency_key",
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("operation", sa.String(length=60), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("record_type", sa.String(length=40), nullable=True),
        sa.Column("record_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("actor", "key", name=op.f("pk_idempotency_key")),
    )


def downgrade() -> None:
    op.drop_table("idempotency_key")
    op.drop_index("ix_catalogue_change_record_id", table_name="catalogue_change")
    op.drop_index("ix_catalogue_change_xid_seq", table_name="catalogue_change")
    op.drop_table("catalogue_change")
