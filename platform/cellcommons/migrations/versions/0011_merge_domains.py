"""Join the domains that branched from 0005 (search, change feed, uploads, access, sync) into one head.

Revision ID: 0011
Revises: 0006, 0007, 0008, 0009, 0010
"""

revision = "0011"
down_revision = ("0006", "0007", "0008", "0009", "0010")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # nothing to change: the branches touch different tables


def downgrade() -> None:
    pass
