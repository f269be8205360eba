"""Machine clients, the jtis of used client assertions, and the platform's own issuer with its signing keys.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "machine_client",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("institution_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("auth_method", sa.String(length=30), nullable=False),
        sa.Column("secret_hash", sa.String(length=200), nullable=True),
        sa.Column("public_jwk", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("roles", sa.ARRAY(sa.String(length=30)), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("secret_rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("client_id ~ '^[a-z0-9][a-z0-9._-]{2,63}$'", name=op.f("ck_machine_client_client_id_form")),
        sa.CheckConstraint(
            "auth_method IN ('client_secret_basic', 'private_key_jwt')",
            name=op.f("ck_machine_client_auth_method_known"),
        ),
        sa.CheckConstraint(
            "(auth_method = 'client_secret_basic') = (secret_hash IS NOT NULL) "
            "AND (auth_method = 'private_key_jwt') = (public_jwk IS NOT NULL)",
            name=op.f("ck_machine_client_credential_matches_method"),
        ),
        sa.CheckConstraint(
            "roles <@ ARRAY['reader','submitter','steward','institution_admin']::varchar[]",
            name=op.f("ck_machine_client_roles_known"),
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institution.id"],
            name=op.f("fk_machine_client_institution_id_institution"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine_client")),
        sa.UniqueConstraint("client_id", name=op.f("uq_machine_client_client_id")),
    )
    op.create_index(op.f("ix_machine_client_institution_id"), "machine_client", ["institution_id"], unique=False)

    op.create_table(
        "client_assertion_jti",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("jti", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti", name=op.f("pk_client_assertion_jti")),
    )
    op.create_index(op.f("ix_client_assertion_jti_expires_at"), "client_assertion_jti", ["expires_at"], unique=False)

    op.create_table(
        "platform_issuer",
        sa.Column("issuer_url", sa.String(length=500), nullable=False),
        sa.Column("audience", sa.String(length=200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("issuer_url", name=op.f("pk_platform_issuer")),
    )

    op.create_table(
        "platform_signing_key",
        sa.Column("kid", sa.String(length=100), nullable=False),
        sa.Column("algorithm", sa.String(length=10), nullable=False),
        sa.Column("public_jwk", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("sealed_private_jwk", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("published_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(retired_at IS NULL) = (published_until IS NULL)", name=op.f("ck_platform_signing_key_retirement_rule")
        ),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_platform_signing_key")),
    )


def downgrade() -> None:
    op.drop_table("platform_signing_key")
    op.drop_table("platform_issuer")
    op.drop_table("client_assertion_jti")
    op.drop_table("machine_client")
