"""The issuer registry: trusted identity providers per institution, with their claim-to-role mapping.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "issuer",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("institution_id", sa.UUID(), nullable=False),
        sa.Column("issuer_url", sa.String(length=500), nullable=False),
        sa.Column("jwks_uri", sa.String(length=500), nullable=False),
        sa.Column("audience", sa.String(length=200), nullable=False),
        sa.Column("algorithms", sa.ARRAY(sa.String(length=10)), nullable=False),
        sa.Column("access_token_claim", sa.String(length=100), nullable=True),
        sa.Column("access_token_value", sa.String(length=200), nullable=True),
        sa.Column("role_claim", sa.String(length=200), nullable=True),
        sa.Column(
            "role_mapping",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "algorithms <@ ARRAY['RS256','RS384','RS512','PS256','PS384','PS512','ES256','ES384','ES512','EdDSA']"
            "::varchar[] AND cardinality(algorithms) > 0",
            name=op.f("ck_issuer_asymmetric_algorithms"),
        ),
        sa.CheckConstraint(
            "(access_token_claim IS NULL) = (access_token_value IS NULL)", name=op.f("ck_issuer_access_token_rule")
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institution.id"],
            name=op.f("fk_issuer_institution_id_institution"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_issuer")),
        sa.UniqueConstraint("issuer_url", name=op.f("uq_issuer_issuer_url")),
    )
    op.create_index(op.f("ix_issuer_institution_id"), "issuer", ["institution_id"], unique=False)


def downgrade() -> None:
    op.drop_table("issuer")
