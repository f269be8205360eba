"""Access tables: requests with their history and per-institution decisions, data-use agreements, notifications.

A request names datasets; each dataset's custodian decides for its own datasets (a request spanning several
institutions is decided per institution). An approval makes one DUA between that provider and the requester's
institution. The transfer gate (DOMAIN.md rule 12) is also a CHECK: an active DUA with a recipient outside the
EEA must name a transfer mechanism other than `intra_eea`.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    ARRAY,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from cellcommons.access.regions import EEA_COUNTRIES
from cellcommons.catalogue.models import pg_enum
from cellcommons.db import Base


class RequestStatus(StrEnum):
    draft = "draft"
    submitted = "submitted"
    in_review = "in_review"  # some custodians decided, others not yet
    approved = "approved"  # decided, an agreement exists but none is in force yet
    rejected = "rejected"
    active = "active"
    expired = "expired"
    revoked = "revoked"


class DecisionOutcome(StrEnum):
    approved = "approved"
    rejected = "rejected"


class AgreementStatus(StrEnum):
    active = "active"  # in force between effective_on and expires_on
    expired = "expired"
    revoked = "revoked"


class TransferMechanism(StrEnum):
    intra_eea = "intra_eea"
    adequacy = "adequacy"
    scc = "scc"


class OnwardTransfer(StrEnum):
    prohibited = "prohibited"
    conditional = "conditional"
    allowed = "allowed"


class EndOfTerm(StrEnum):
    return_data = "return"
    destroy = "destroy"


class NotificationKind(StrEnum):
    new_request = "new_request"
    clarification = "clarification"
    decision = "decision"
    agreement_expiring = "agreement_expiring"
    agreement_revoked = "agreement_revoked"


def _id() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


def _institution(ondelete: str = "RESTRICT") -> Mapped[uuid.UUID]:
    return mapped_column(ForeignKey("institution.id", ondelete=ondelete), index=True)


class AccessRequest(Base):
    __tablename__ = "access_request"

    id: Mapped[uuid.UUID] = _id()
    requester_institution_id: Mapped[uuid.UUID] = _institution()
    requester_subject: Mapped[str] = mapped_column(String(255))
    requester_actor: Mapped[str] = mapped_column(String(255))  # as the audit log names them
    orcid: Mapped[str | None] = mapped_column(String(19))
    # The requester's institution vouched for the ORCID (its issuer's ORCID claim); else the requester typed it.
    orcid_verified: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    status: Mapped[RequestStatus] = mapped_column(pg_enum(RequestStatus, "access_request_status"))
    # The purpose: one primary DUO term (GRU, HMB, DS, POA), optional GSO / CC, and what DUO has no term for.
    purpose_terms: Mapped[list[str]] = mapped_column(ARRAY(String(20)))
    disease: Mapped[str | None] = mapped_column(String(20))  # MONDO, when the purpose is DS
    methods_development: Mapped[bool] = mapped_column(Boolean)
    commercial_use: Mapped[bool] = mapped_column(Boolean)
    lay_summary: Mapped[str] = mapped_column(Text)
    ethics_reference: Mapped[str | None] = mapped_column(String(200))
    project: Mapped[str | None] = mapped_column(String(500))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    __table_args__ = (
        CheckConstraint("period_start < period_end", name="period_ordered"),
        CheckConstraint("cardinality(purpose_terms) >= 1", name="has_purpose"),
        Index("ix_access_request_requester", "requester_institution_id", "requester_subject"),
    )


class RequestedDataset(Base):
    """A dataset named in a request, with its custodian (who decides) and the matcher's verdict at submission."""

    __tablename__ = "access_request_dataset"

    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("access_request.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dataset.id", ondelete="RESTRICT"), primary_key=True)
    provider_institution_id: Mapped[uuid.UUID] = _institution()
    verdict: Mapped[dict | None] = mapped_column(JSONB)


class AccessDecision(Base):
    """One custodian's decision on a request: approved (with an agreement) or rejected with a reason."""

    __tablename__ = "access_decision"

    id: Mapped[uuid.UUID] = _id()
    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("access_request.id", ondelete="CASCADE"))
    provider_institution_id: Mapped[uuid.UUID] = _institution()
    outcome: Mapped[DecisionOutcome] = mapped_column(pg_enum(DecisionOutcome, "access_decision_outcome"))
    decided_by: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()

    __table_args__ = (
        UniqueConstraint("request_id", "provider_institution_id"),
        CheckConstraint("outcome = 'approved' OR reason IS NOT NULL", name="rejection_has_reason"),
    )


class RequestEvent(Base):
    """The request's history: every transition, who made it, when and why."""

    __tablename__ = "access_request_event"

    id: Mapped[uuid.UUID] = _id()
    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("access_request.id", ondelete="CASCADE"), index=True)
    actor: Mapped[str] = mapped_column(String(255))
    actor_institution_id: Mapped[uuid.UUID | None] = _institution()  # None: the system (expiry)
    action: Mapped[str] = mapped_column(String(40))
    from_status: Mapped[RequestStatus | None] = mapped_column(pg_enum(RequestStatus, "access_request_status"))
    to_status: Mapped[RequestStatus] = mapped_column(pg_enum(RequestStatus, "access_request_status"))
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.clock_timestamp())


_EEA_LIST = ", ".join(f"'{code}'" for code in sorted(EEA_COUNTRIES))


class Agreement(Base):
    """A data-use agreement between the provider (custodian) and the recipient (the requester's institution)."""

    __tablename__ = "data_use_agreement"

    id: Mapped[uuid.UUID] = _id()
    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("access_request.id", ondelete="RESTRICT"), index=True)
    provider_institution_id: Mapped[uuid.UUID] = _institution()
    recipient_institution_id: Mapped[uuid.UUID] = _institution()
    recipient_subject: Mapped[str] = mapped_column(String(255))
    recipient_country: Mapped[str] = mapped_column(String(2))  # at approval: what the transfer gate judged
    purpose: Mapped[dict] = mapped_column(JSONB)
    status: Mapped[AgreementStatus] = mapped_column(pg_enum(AgreementStatus, "agreement_status"))
    approved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    effective_on: Mapped[date] = mapped_column(Date)
    expires_on: Mapped[date] = mapped_column(Date)
    transfer_mechanism: Mapped[TransferMechanism | None] = mapped_column(
        pg_enum(TransferMechanism, "transfer_mechanism")
    )
    no_reidentification: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    onward_transfer: Mapped[OnwardTransfer] = mapped_column(pg_enum(OnwardTransfer, "onward_transfer"))
    publication_terms: Mapped[str | None] = mapped_column(Text)
    end_of_term: Mapped[EndOfTerm] = mapped_column(pg_enum(EndOfTerm, "end_of_term"))
    export_policy: Mapped[dict] = mapped_column(JSONB)  # column sensitivity tag → drop | pseudonymise | keep
    covers_later_versions: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    document_reference: Mapped[str | None] = mapped_column(String(500))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_by: Mapped[str | None] = mapped_column(String(255))
    revocation_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()

    __table_args__ = (
        CheckConstraint("effective_on < expires_on", name="term_ordered"),
        CheckConstraint("no_reidentification", name="no_reidentification_required"),
        CheckConstraint("recipient_country ~ '^[A-Z]{2}$'", name="recipient_country_iso"),
        CheckConstraint("(status = 'revoked') = (revoked_at IS NOT NULL)", name="revoked_iff_revoked_at"),
        # DOMAIN.md rule 12: outside the EEA, no agreement is in force without a transfer mechanism.
        CheckConstraint(
            f"status <> 'active' OR recipient_country IN ({_EEA_LIST}) "
            "OR (transfer_mechanism IS NOT NULL AND transfer_mechanism IN ('adequacy', 'scc'))",
            name="transfer_gate",
        ),
        UniqueConstraint("request_id", "provider_institution_id"),
        Index("ix_data_use_agreement_recipient_status", "recipient_institution_id", "status"),
    )


class AgreementDataset(Base):
    """A dataset an agreement names; it covers the versions published by `approved_at` (or later ones too)."""

    __tablename__ = "data_use_agreement_dataset"

    agreement_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("data_use_agreement.id", ondelete="CASCADE"), primary_key=True
    )
    dataset_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("dataset.id", ondelete="RESTRICT"), primary_key=True, index=True
    )


class Notification(Base):
    """An event for people to see (portal, mail hook): for one person when `subject` is set, else the
    institution's stewards."""

    __tablename__ = "access_notification"

    id: Mapped[uuid.UUID] = _id()
    kind: Mapped[NotificationKind] = mapped_column(pg_enum(NotificationKind, "access_notification_kind"))
    institution_id: Mapped[uuid.UUID] = _institution()
    subject: Mapped[str | None] = mapped_column(String(255))
    request_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("access_request.id", ondelete="CASCADE"))
    agreement_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("data_use_agreement.id", ondelete="CASCADE"))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()

    __table_args__ = (
        # "Expires in 30 days" is said once per agreement, however often the sweep runs.
        Index(
            "uq_access_notification_expiring_once",
            "agreement_id",
            unique=True,
            postgresql_where=text("kind = 'agreement_expiring'"),
        ),
    )
