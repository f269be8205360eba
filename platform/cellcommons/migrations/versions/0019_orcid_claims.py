"""An issuer may vouch for its people's ORCID iDs (`issuer.orcid_claim`); an access request records whether
its ORCID was vouched for so or typed in (`access_request.orcid_verified`). Requests made before: typed.

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("issuer", sa.Column("orcid_claim", sa.String(length=200), nullable=True))
    op.add_column(
        "access_request", sa.Column("orcid_verified", sa.Boolean(), server_default=sa.text("false"), nullable=False)
    )


def downgrade() -> None:
    op.drop_column("access_request", "orcid_verified")
    op.drop_column("issuer", "orcid_claim")
