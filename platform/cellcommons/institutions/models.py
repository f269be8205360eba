"""The issuer registry: which identity providers the platform trusts, each for one institution only."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ARRAY, CheckConstraint, DateTime, ForeignKey, String, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from cellcommons.db import Base


class Issuer(Base):
    __tablename__ = "issuer"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    institution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("institution.id", ondelete="CASCADE"), index=True)
    # Compared byte for byte with a token's `iss`.
    issuer_url: Mapped[str] = mapped_column(String(500), unique=True)
    # Taken from the issuer's discovery document when registered, then pinned: a changed discovery document
    # cannot redirect key fetching elsewhere.
    jwks_uri: Mapped[str] = mapped_column(String(500))
    audience: Mapped[str] = mapped_column(String(200))
    algorithms: Mapped[list[str]] = mapped_column(ARRAY(String(10)))
    # How an access token is told from an ID token: header `typ: at+jwt` (RFC 9068) when these are null,
    # else a claim that must hold a value (for issuers that do not set `typ`).
    access_token_claim: Mapped[str | None] = mapped_column(String(100))
    access_token_value: Mapped[str | None] = mapped_column(String(200))
    # A claim path (`groups`, `realm_access.roles`) and which of its values give which platform role.
    role_claim: Mapped[str | None] = mapped_column(String(200))
    role_mapping: Mapped[dict] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    enabled: Mapped[bool] = mapped_column(server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint(
            "algorithms <@ ARRAY['RS256','RS384','RS512','PS256','PS384','PS512','ES256','ES384','ES512','EdDSA']"
            "::varchar[] AND cardinality(algorithms) > 0",
            name="asymmetric_algorithms",
        ),
        CheckConstraint("(access_token_claim IS NULL) = (access_token_value IS NULL)", name="access_token_rule"),
    )
