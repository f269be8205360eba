"""A sync run can end `interrupted`: its process was shut down and stopped it after a committed page.

Revision ID: 0016
Revises: 0015
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TYPE sync_run_status ADD VALUE IF NOT EXISTS 'interrupted'")


def downgrade() -> None:
    pass  # PostgreSQL cannot drop an enum value; 'interrupted' stays, unused
