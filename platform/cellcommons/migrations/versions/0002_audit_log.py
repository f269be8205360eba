"""The audit log: append-only, hash-chained events and the chain head that serialises appends.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from cellcommons.migrations import app_role

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64

# For every role, the owner running a migration included: privileges alone would not stop the table's owner.
REFUSE_REWRITE = """
CREATE FUNCTION audit_event_refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def upgrade() -> None:
    role = app_role()
    op.create_table(
        "audit_event",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("institution", sa.String(100), nullable=True),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target", sa.String(255), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("details", postgresql.JSONB(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.CheckConstraint("id > 0", name=op.f("ck_audit_event_id_positive")),
        sa.CheckConstraint("outcome IN ('success', 'denied', 'failure')", name=op.f("ck_audit_event_outcome")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
    )
    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_audit_chain_head_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain_head")),
    )
    op.execute(f"INSERT INTO audit_chain_head (id, seq, hash) VALUES (1, 0, '{GENESIS_HASH}')")

    op.execute(REFUSE_REWRITE)
    op.execute(
        "CREATE TRIGGER audit_event_no_update_delete BEFORE UPDATE OR DELETE ON audit_event "
        "FOR EACH ROW EXECUTE FUNCTION audit_event_refuse_rewrite()"
    )
    op.execute(
        "CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_event_refuse_rewrite()"
    )
    # The default privileges of 0001 granted rows on both tables; take back what the log must not allow.
    op.execute(f'REVOKE UPDATE, DELETE, TRUNCATE ON audit_event FROM "{role}"')
    # The head is moved, never added or removed: its one row exists from here on.
    op.execute(f'REVOKE INSERT, DELETE, TRUNCATE ON audit_chain_head FROM "{role}"')


def downgrade() -> None:
    op.drop_table("audit_chain_head")
    op.drop_table("audit_event")  # its triggers go with it
    op.execute("DROP FUNCTION audit_event_refuse_rewrite()")
