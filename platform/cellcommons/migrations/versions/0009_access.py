"""Access: requests with history and per-institution decisions, data-use agreements, notifications (issue 11).

Revision ID: 0009
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0005"
branch_labels = None
depends_on = None

# The request status type is created with access_request; the history table reuses it.
REQUEST_STATUS_AGAIN = postgresql.ENUM(name="access_request_status", create_type=False)
# Frozen here (not imported) so the migration means the same whatever the code says later.
EEA = (
    "'AT', 'BE', 'BG', 'CY', 'CZ', 'DE', 'DK', 'EE', 'ES', 'FI', 'FR', 'GR', 'HR', 'HU', 'IE', 'IS', 'IT', 'LI', "
    "'LT', 'LU', 'LV', 'MT', 'NL', 'NO', 'PL', 'PT', 'RO', 'SE', 'SI', 'SK'"
)
TRANSFER_GATE = (
    f"status <> 'active' OR recipient_country IN ({EEA}) "
    "OR (transfer_mechanism IS NOT NULL AND transfer_mechanism IN ('adequacy', 'scc'))"
)
TABLES = [
    "access_notification",
    "data_use_agreement_dataset",
    "data_use_agreement",
    "access_request_event",
    "access_request_dataset",
    "access_decision",
    "access_request",
]
ENUMS = [
    "access_notification_kind",
    "end_of_term",
    "onward_transfer",
    "transfer_mechanism",
    "agreement_status",
    "access_decision_outcome",
    "access_request_status",
]


def upgrade() -> None:
    op.create_table(
        "access_request",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("requester_institution_id", sa.UUID(), nullable=False),
        sa.Column("requester_subject", sa.String(length=255), nullable=False),
        sa.Column("requester_actor", sa.String(length=255), nullable=False),
        sa.Column("orcid", sa.String(length=19), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "draft",
                "submitted",
                "in_review",
                "approved",
                "rejected",
                "active",
                "expired",
                "revoked",
                name="access_request_status",
            ),
            nullable=False,
        ),
        sa.Column("purpose_terms", sa.ARRAY(sa.String(length=20)), nullable=False),
        sa.Column("disease", sa.String(length=20), nullable=True),
        sa.Column("methods_development", sa.Boolean(), nullable=False),
        sa.Column("commercial_use", sa.Boolean(), nullable=False),
        sa.Column("lay_summary", sa.Text(), nullable=False),
        sa.Column("ethics_reference", sa.String(length=200), nullable=True),
        sa.Column("project", sa.String(length=500), nullable=True),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("cardinality(purpose_terms) >= 1", name=op.f("ck_access_request_has_purpose")),
        sa.CheckConstraint("period_start < period_end", name=op.f("ck_access_request_period_ordered")),
        sa.ForeignKeyConstraint(
            ["requester_institution_id"],
            ["institution.id"],
            name=op.f("fk_access_request_requester_institution_id_institution"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_request")),
    )
    op.create_index(
        "ix_access_request_requester", "access_request", ["requester_institution_id", "requester_subject"], unique=False
    )
    op.create_index(
        op.f("ix_access_request_requester_institution_id"), "access_request", ["requester_institution_id"], unique=False
    )
    op.create_table(
        "access_decision",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("request_id", sa.UUID(), nullable=False),
        sa.Column("provider_institution_id", sa.UUID(), nullable=False),
        sa.Column("outcome", sa.Enum("approved", "rejected", name="access_decision_outcome"), nullable=False),
        sa.Column("decided_by", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "outcome = 'approved' OR reason IS NOT NULL", name=op.f("ck_access_decision_rejection_has_reason")
        ),
        sa.ForeignKeyConstraint(
            ["provider_institution_id"],
            ["institution.id"],
            name=op.f("fk_access_decision_provider_institution_id_institution"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["access_request.id"],
            name=op.f("fk_access_decision_request_id_access_request"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_decision")),
        sa.UniqueConstraint(
            "request_id", "provider_institution_id", name=op.f("uq_access_decision_request_id_provider_institution_id")
        ),
    )
    op.create_index(
        op.f("ix_access_decision_provider_institution_id"), "access_decision", ["provider_institution_id"], unique=False
    )
    op.create_table(
        "access_request_dataset",
        sa.Column("request_id", sa.UUID(), nullable=False),
        sa.Column("dataset_id", sa.UUID(), nullable=False),
        sa.Column("provider_institution_id", sa.UUID(), nullable=False),
        sa.Column("verdict", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["dataset.id"],
            name=op.f("fk_access_request_dataset_dataset_id_dataset"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["provider_institution_id"],
            ["institution.id"],
            name=op.f("fk_access_request_dataset_provider_institution_id_institution"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["access_request.id"],
            name=op.f("fk_access_request_dataset_request_id_access_request"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("request_id", "dataset_id", name=op.f("pk_access_request_dataset")),
    )
    op.create_index(
        op.f("ix_access_request_dataset_provider_institution_id"),
        "access_request_dataset",
        ["provider_institution_id"],
        unique=False,
    )
    op.create_table(
        "access_request_event",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("request_id", sa.UUID(), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("actor_institution_id", sa.UUID(), nullable=True),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("from_status", REQUEST_STATUS_AGAIN, nullable=True),
        sa.Column("to_status", REQUEST_STATUS_AGAIN, nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["actor_institution_id"],
            ["institution.id"],
            name=op.f("fk_access_request_event_actor_institution_id_institution"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["access_request.id"],
            name=op.f("fk_access_request_event_request_id_access_request"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_request_event")),
    )
    op.create_index(
        op.f("ix_access_request_event_actor_institution_id"),
        "access_request_event",
        ["actor_institution_id"],
        unique=False,
    )
    op.create_index(op.f("ix_access_request_event_request_id"), "access_request_event", ["request_id"], unique=False)
    op.create_table(
        "data_use_agreement",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("request_id", sa.UUID(), nullable=False),
        sa.Column("provider_institution_id", sa.UUID(), nullable=False),
        sa.Column("recipient_institution_id", sa.UUID(), nullable=False),
        sa.Column("recipient_subject", sa.String(length=255), nullable=False),
        sa.Column("recipient_country", sa.String(length=2), nullable=False),
        sa.Column("purpose", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.Enum("active", "expired", "revoked", name="agreement_status"), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("effective_on", sa.Date(), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=False),
        sa.Column(
            "transfer_mechanism", sa.Enum("intra_eea", "adequacy", "scc", name="transfer_mechanism"), nullable=True
        ),
        sa.Column("no_reidentification", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "onward_transfer", sa.Enum("prohibited", "conditional", "allowed", name="onward_transfer"), nullable=False
        ),
        sa.Column("publication_terms", sa.Text(), nullable=True),
        sa.Column("end_of_term", sa.Enum("return", "destroy", name="end_of_term"), nullable=False),
        sa.Column("export_policy", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("covers_later_versions", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("document_reference", sa.String(length=500), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=255), nullable=True),
        sa.Column("revocation_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "(status = 'revoked') = (revoked_at IS NOT NULL)", name=op.f("ck_data_use_agreement_revoked_iff_revoked_at")
        ),
        sa.CheckConstraint(
            "recipient_country ~ '^[A-Z]{2}$'", name=op.f("ck_data_use_agreement_recipient_country_iso")
        ),
        sa.CheckConstraint(
            TRANSFER_GATE,
            name=op.f("ck_data_use_agreement_transfer_gate"),
        ),
        sa.CheckConstraint("effective_on < expires_on", name=op.f("ck_data_use_agreement_term_ordered")),
        sa.CheckConstraint("no_reidentification", name=op.f("ck_data_use_agreement_no_reidentification_required")),
        sa.ForeignKeyConstraint(
            ["provider_institution_id"],
            ["institution.id"],
            name=op.f("fk_data_use_agreement_provider_institution_id_institution"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["recipient_institution_id"],
            ["institution.id"],
            name=op.f("fk_data_use_agreement_recipient_institution_id_institution"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["access_request.id"],
            name=op.f("fk_data_use_agreement_request_id_access_request"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_use_agreement")),
        sa.UniqueConstraint(
            "request_id",
            "provider_institution_id",
            name=op.f("uq_data_use_agreement_request_id_provider_institution_id"),
        ),
    )
    op.create_index(
        op.f("ix_data_use_agreement_provider_institution_id"),
        "data_use_agreement",
        ["provider_institution_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_data_use_agreement_recipient_institution_id"),
        "data_use_agreement",
        ["recipient_institution_id"],
        unique=False,
    )
    op.create_index(
        "ix_data_use_agreement_recipient_status",
        "data_use_agreement",
        ["recipient_institution_id", "status"],
        unique=False,
    )
    op.create_index(op.f("ix_data_use_agreement_request_id"), "data_use_agreement", ["request_id"], unique=False)
    op.create_table(
        "access_notification",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "new_request",
                "clarification",
                "decision",
                "agreement_expiring",
                "agreement_revoked",
                name="access_notification_kind",
            ),
            nullable=False,
        ),
        sa.Column("institution_id", sa.UUID(), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=True),
        sa.Column("request_id", sa.UUID(), nullable=True),
        sa.Column("agreement_id", sa.UUID(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["agreement_id"],
            ["data_use_agreement.id"],
            name=op.f("fk_access_notification_agreement_id_data_use_agreement"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institution.id"],
            name=op.f("fk_access_notification_institution_id_institution"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["access_request.id"],
            name=op.f("fk_access_notification_request_id_access_request"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_notification")),
    )
    op.create_index(
        op.f("ix_access_notification_institution_id"), "access_notification", ["institution_id"], unique=False
    )
    op.create_index(
        "uq_access_notification_expiring_once",
        "access_notification",
        ["agreement_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'agreement_expiring'"),
    )
    op.create_table(
        "data_use_agreement_dataset",
        sa.Column("agreement_id", sa.UUID(), nullable=False),
        sa.Column("dataset_id", sa.UUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agreement_id"],
            ["data_use_agreement.id"],
            name=op.f("fk_data_use_agreement_dataset_agreement_id_data_use_agreement"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["dataset.id"],
            name=op.f("fk_data_use_agreement_dataset_dataset_id_dataset"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("agreement_id", "dataset_id", name=op.f("pk_data_use_agreement_dataset")),
    )
    op.create_index(
        op.f("ix_data_use_agreement_dataset_dataset_id"), "data_use_agreement_dataset", ["dataset_id"], unique=False
    )


def downgrade() -> None:
    for name in TABLES:
        op.drop_table(name)
    for name in ENUMS:
        op.execute(f"DROP TYPE {name}")
