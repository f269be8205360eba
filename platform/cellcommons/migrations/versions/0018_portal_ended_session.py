"""Portal sessions ended on the server by signing out: their copied cookies no longer sign anyone in.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portal_ended_session",
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_portal_ended_session")),
    )
    op.create_index(op.f("ix_portal_ended_session_expires_at"), "portal_ended_session", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_portal_ended_session_expires_at"), table_name="portal_ended_session")
    op.drop_table("portal_ended_session")
