"""Join the branches from 0011 (exports; file transfers with the one-call audit append) into one head.

Revision ID: 0015
Revises: 0012, 0014
"""

revision = "0015"
down_revision = ("0012", "0014")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # nothing to change: the branches touch different tables


def downgrade() -> None:
    pass
