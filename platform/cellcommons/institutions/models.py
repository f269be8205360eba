"""The issuer registry: which identity providers the platform trusts, each for one institution only."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ARRAY, CheckConstraint, DateTime, ForeignKey, String, Text, func, text
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
    # Where the issuer's tokens carry the person's ORCID iD, if they do (eduPersonOrcid, ORCID's own sign-in)
    orcid_claim: Mapped[str | None] = mapped_column(String(200))
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


# --- machine clients and the platform's own issuer (issue 6) ------------------------------------------------

MACHINE_CLIENT_ROLES = ("reader", "submitter", "steward", "institution_admin")
CLIENT_AUTH_METHODS = ("client_secret_basic", "private_key_jwt")


class MachineClient(Base):
    """A script or service of one institution that obtains platform tokens with the client-credentials grant.

    The institution and roles of its tokens come from this registration, never from a claim."""

    __tablename__ = "machine_client"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    institution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("institution.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    auth_method: Mapped[str] = mapped_column(String(30))
    # client_secret_basic: an argon2id hash of the secret (the secret itself is shown once and never stored).
    secret_hash: Mapped[str | None] = mapped_column(String(200))
    # private_key_jwt: the registered public key (a public JWK; never a private one).
    public_jwk: Mapped[dict | None] = mapped_column(JSONB(none_as_null=True))
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(30)))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    secret_rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Revoked clients are kept (audit trail; a client_id is never reused) and refused everywhere.
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("client_id ~ '^[a-z0-9][a-z0-9._-]{2,63}$'", name="client_id_form"),
        CheckConstraint("auth_method IN ('client_secret_basic', 'private_key_jwt')", name="auth_method_known"),
        CheckConstraint(
            "(auth_method = 'client_secret_basic') = (secret_hash IS NOT NULL) "
            "AND (auth_method = 'private_key_jwt') = (public_jwk IS NOT NULL)",
            name="credential_matches_method",
        ),
        CheckConstraint(
            "roles <@ ARRAY['reader','submitter','steward','institution_admin']::varchar[]", name="roles_known"
        ),
    )


class ClientAssertionJti(Base):
    """`jti`s of private_key_jwt assertions already used, kept until the assertion expires: a replay is refused
    by the primary key, across processes."""

    __tablename__ = "client_assertion_jti"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class PlatformIssuer(Base):
    """The platform's own issuer in the registry: written from settings when the API starts. Tokens it issues
    map to the institution of the machine client named by their client_id."""

    __tablename__ = "platform_issuer"

    issuer_url: Mapped[str] = mapped_column(String(500), primary_key=True)
    audience: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PlatformSigningKey(Base):
    """The platform's token-signing keys. The newest unretired key signs; a retired key stays published in the
    JWKS until `published_until` (its last token's expiry), then it is deleted."""

    __tablename__ = "platform_signing_key"

    kid: Mapped[str] = mapped_column(String(100), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(10))
    public_jwk: Mapped[dict] = mapped_column(JSONB)
    # The private JWK as a JWE (dir, A256GCM) under a key derived from settings.signing_key_secret.
    sealed_private_jwk: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    published_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (CheckConstraint("(retired_at IS NULL) = (published_until IS NULL)", name="retirement_rule"),)
