"""Machine clients: registration, credentials, the client-credentials grant, and what the validator asks of them.

A client belongs to one institution and carries platform roles; its tokens' scope is a subset of those roles
(scope values are role names). It authenticates with `client_secret_basic` (the secret is random, shown once
and stored as an argon2id hash) or `private_key_jwt` (RFC 7523: an assertion signed with its registered key;
`iss` = `sub` = client_id, `aud` the token endpoint or the issuer, short `exp`, each `jti` once — used jtis are
kept in PostgreSQL until the assertion expires, so a replay is refused by every process).

The grant is implemented here rather than through Authlib's AuthorizationServer: that class is synchronous
(`query_client`, `authenticate_client`, `validate_jti`, `save_token` are plain calls) while every database
access here is async; bridging it would mean running the server in a thread that blocks on the event loop.
Authlib still does what fits: Basic credentials parsing, the RFC 7523 assertion checks
(`JWTBearerClientAssertion.extract_assertion` / `verify_claims`) and the RFC 6749 error classes.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from authlib.oauth2.base import OAuth2Error
from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    UnsupportedGrantTypeError,
)
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.audit.service import append
from cellcommons.auth import platform_keys
from cellcommons.auth.principal import Role
from cellcommons.catalogue.models import Institution
from cellcommons.db import Database
from cellcommons.errors import Conflict, InvalidInput, NotFound
from cellcommons.institutions.models import MACHINE_CLIENT_ROLES, ClientAssertionJti, MachineClient
from cellcommons.settings import Settings

CLIENT_ROLES = frozenset(Role(r) for r in MACHINE_CLIENT_ROLES)  # never platform_admin: that is for people
GRANT_TYPE = "client_credentials"
ASSERTION_TYPE = JWTBearerClientAssertion.CLIENT_ASSERTION_TYPE
AUTH_METHODS = ("client_secret_basic", "private_key_jwt")
# Per key type, the algorithms an assertion may use (a registered JWK naming its `alg` allows only that one).
ASSERTION_ALGORITHMS = {
    ("RSA", None): ("RS256", "PS256"),
    ("EC", "P-256"): ("ES256",),
    ("EC", "P-384"): ("ES384",),
    ("OKP", "Ed25519"): ("EdDSA",),
}
MIN_RSA_BITS = 2048  # RFC 7518 §3.3: smaller RSA keys MUST NOT be used with RS256 or PS256
MAX_RSA_BITS = 16_384  # OpenSSL verifies no larger: such a client could never sign in
MAX_ASSERTION_BYTES = 8192
LEEWAY = 30  # seconds of clock skew allowed on assertion times
_KEY_LOCATION_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")
# Machine-generated secrets have 256 bits of entropy: a moderate argon2id cost (OWASP's minimum profile) keeps
# the endpoint fast while a stolen table still gives nothing.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
_CLIENT_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
_CLIENT_ID = re.compile(r"[a-z0-9][a-z0-9._-]{2,63}")  # as the machine_client check constraint


@dataclass(frozen=True)
class ClientRegistration:
    """An active (not revoked) client as tokens see it."""

    client_id: str
    institution_id: uuid.UUID
    institution_slug: str
    roles: frozenset[Role]
    auth_method: str
    public_jwk: dict | None = None
    secret_hash: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class NewClient:
    client: MachineClient
    institution_slug: str
    secret: str | None  # client_secret_basic: shown once, never stored


# --- the registry ---------------------------------------------------------------------------------------------


def _roles(roles: list[str] | None) -> list[str]:
    unknown = sorted(set(roles or []) - {r.value for r in CLIENT_ROLES})
    if unknown:
        allowed = ", ".join(sorted(r.value for r in CLIENT_ROLES))
        raise InvalidInput(f"unknown or not allowed for machine clients: {', '.join(unknown)} (allowed: {allowed})",
                           field="roles")  # fmt: skip
    return sorted({Role.reader.value, *(roles or [])})


def _public_jwk(jwk: dict) -> dict:
    try:
        key = JWKRegistry.import_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError):
        raise InvalidInput("is not a usable JWK", field="public_key") from None
    if key.is_private:
        raise InvalidInput("is a private key: register its public half only", field="public_key")
    if _assertion_algorithms(key.as_dict()) == ():
        raise InvalidInput("must be an RSA, EC P-256/P-384 or Ed25519 public key", field="public_key")
    if problem := _rsa_size_problem(key):
        raise InvalidInput(problem, field="public_key")
    public = key.as_dict(private=False)
    if "kid" not in public:
        public["kid"] = key.thumbprint()
    return public


def _rsa_size_problem(key: Any) -> str | None:
    """Why an RSA key's size is refused, or None (also None for other key types)."""
    if not isinstance(key, RSAKey):
        return None
    bits = key.public_key.key_size
    if bits < MIN_RSA_BITS:
        return f"is a {bits}-bit RSA key: RSA keys need at least {MIN_RSA_BITS} bits"
    if bits > MAX_RSA_BITS:
        return f"is a {bits}-bit RSA key: RSA keys of more than {MAX_RSA_BITS} bits cannot be verified"
    return None


def read_public_key(text: str) -> dict:
    """A JWK (JSON) or a PEM public key, as a JWK dict for `add_client(public_jwk=…)`."""
    text = text.strip()
    if text.startswith("{"):
        try:
            jwk = json.loads(text)
        except ValueError:
            raise InvalidInput("is neither a JWK nor a PEM public key", field="public_key") from None
        if not isinstance(jwk, dict):
            raise InvalidInput("is neither a JWK nor a PEM public key", field="public_key")
        return jwk
    if "PRIVATE KEY" in text:
        raise InvalidInput("is a private key: register its public half only", field="public_key")
    for key_type in (RSAKey, ECKey, OKPKey):
        try:
            return key_type.import_key(text.encode()).as_dict(private=False)
        except (JoseError, ValueError, TypeError):
            continue
    raise InvalidInput("is neither a JWK nor a PEM public key", field="public_key")


def _assertion_algorithms(jwk: Mapping[str, Any]) -> tuple[str, ...]:
    allowed = ASSERTION_ALGORITHMS.get((jwk.get("kty"), jwk.get("crv") if jwk.get("kty") != "RSA" else None), ())
    if jwk.get("alg"):
        return (jwk["alg"],) if jwk["alg"] in allowed else ()
    return allowed


def _new_client_id(slug: str) -> str:
    return f"{slug[:40]}-{''.join(secrets.choice(_CLIENT_ID_CHARS) for _ in range(10))}"


async def _institution(session: AsyncSession, slug: str) -> Institution:
    institution = await session.scalar(select(Institution).where(Institution.slug == slug))
    if institution is None:
        raise NotFound(f"no institution {slug!r}", field="institution")
    return institution


async def add_client(
    session: AsyncSession,
    *,
    institution_slug: str,
    roles: list[str] | None = None,
    name: str | None = None,
    client_id: str | None = None,
    public_jwk: dict | None = None,
    actor: str = "system:cli",
) -> NewClient:
    """Register a client: with `public_jwk` it authenticates with private_key_jwt, else with a new secret
    (returned once in `NewClient.secret`)."""
    institution = await _institution(session, institution_slug)
    role_list = _roles(roles)
    if client_id is None:
        client_id = _new_client_id(institution.slug)
    elif not _CLIENT_ID.fullmatch(client_id):
        raise InvalidInput("3-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
                           field="client_id")  # fmt: skip
    if await session.scalar(select(MachineClient.id).where(MachineClient.client_id == client_id)):
        raise Conflict(f"client {client_id} exists already (client ids are never reused)", field="client_id")
    secret = None if public_jwk is not None else secrets.token_urlsafe(32)
    client = MachineClient(
        client_id=client_id,
        institution_id=institution.id,
        name=(name or client_id)[:200],
        auth_method="private_key_jwt" if public_jwk is not None else "client_secret_basic",
        secret_hash=await asyncio.to_thread(_hasher.hash, secret) if secret else None,
        public_jwk=_public_jwk(public_jwk) if public_jwk is not None else None,
        roles=role_list,
    )
    session.add(client)
    await session.flush()
    await append(session, actor=actor, action="client.register", institution=institution.slug, target=client_id,
                 details={"auth_method": client.auth_method, "roles": role_list})  # fmt: skip
    return NewClient(client, institution.slug, secret)


async def _active(session: AsyncSession, client_id: str) -> tuple[MachineClient, str]:
    row = (
        await session.execute(
            select(MachineClient, Institution.slug)
            .join(Institution, Institution.id == MachineClient.institution_id)
            .where(MachineClient.client_id == client_id, MachineClient.revoked_at.is_(None))
            .with_for_update(of=MachineClient)
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"no active client {client_id}", field="client_id")
    return row[0], row[1]


async def rotate_secret(session: AsyncSession, client_id: str, *, actor: str = "system:cli") -> str:
    """A new secret for a client_secret_basic client; the old one stops working at once. Returned once."""
    client, slug = await _active(session, client_id)
    if client.auth_method != "client_secret_basic":
        raise InvalidInput("this client authenticates with private_key_jwt and has no secret", field="client_id")
    secret = secrets.token_urlsafe(32)
    client.secret_hash = await asyncio.to_thread(_hasher.hash, secret)
    client.secret_rotated_at = datetime.now(UTC)
    await session.flush()
    await append(session, actor=actor, action="client.rotate_secret", institution=slug, target=client_id)
    return secret


async def revoke_client(session: AsyncSession, client_id: str, *, actor: str = "system:cli") -> MachineClient:
    """The client gets no more tokens, and the tokens it holds stop validating (the validator reads the registry)."""
    client, slug = await _active(session, client_id)
    client.revoked_at = datetime.now(UTC)
    await session.flush()
    await append(session, actor=actor, action="client.revoke", institution=slug, target=client_id)
    return client


async def list_clients(session: AsyncSession, institution_slug: str | None = None) -> list[tuple[str, MachineClient]]:
    query = (
        select(Institution.slug, MachineClient)
        .join(Institution, Institution.id == MachineClient.institution_id)
        .order_by(Institution.slug, MachineClient.client_id)
    )
    if institution_slug is not None:
        query = query.where(Institution.slug == institution_slug)
    return [(slug, client) for slug, client in await session.execute(query)]


async def registration(session: AsyncSession, client_id: str) -> ClientRegistration | None:
    """The active registration of `client_id`, or None (unknown or revoked)."""
    if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
        return None  # not even the form of a client id: no query with arbitrary input
    row = (
        await session.execute(
            select(MachineClient, Institution.slug)
            .join(Institution, Institution.id == MachineClient.institution_id)
            .where(MachineClient.client_id == client_id, MachineClient.revoked_at.is_(None))
        )
    ).one_or_none()
    if row is None:
        return None
    client, slug = row
    return ClientRegistration(
        client_id=client.client_id,
        institution_id=client.institution_id,
        institution_slug=slug,
        roles=frozenset(Role(r) for r in client.roles),
        auth_method=client.auth_method,
        public_jwk=client.public_jwk,
        secret_hash=client.secret_hash,
    )


# --- the client-credentials grant -----------------------------------------------------------------------------


class TokenRequestRefused(Exception):
    """An RFC 6749 §5.2 error for the caller, and for the audit log the reason the caller is not told."""

    def __init__(self, error: OAuth2Error, reason: str, client_id: str | None = None):
        super().__init__(reason)
        self.error = error
        self.reason = _printable(reason, 300)
        self.client_id = _printable(client_id, 64) if client_id else None


def _printable(text: str, limit: int) -> str:
    """Caller input as it may appear in the audit log: printable characters only, bounded."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def _invalid_client(reason: str, client_id: str | None = None) -> TokenRequestRefused:
    # One answer for every authentication failure: unknown client, wrong secret, revoked, bad or replayed assertion.
    return TokenRequestRefused(InvalidClientError(description="client authentication failed", status_code=401),
                               reason, client_id)  # fmt: skip


def invalid_request(description: str) -> TokenRequestRefused:
    return TokenRequestRefused(InvalidRequestError(description=description), description)


def _invalid_scope(description: str, reason: str, client_id: str) -> TokenRequestRefused:
    return TokenRequestRefused(InvalidScopeError(description=description), reason, client_id)


class _UnsupportedGrantType(UnsupportedGrantTypeError):
    def get_error_description(self) -> str:
        return "only grant_type=client_credentials is supported"  # Authlib's default echoes the caller's input


class _AssertionRules(JWTBearerClientAssertion):
    """Authlib's RFC 7523 claim rules (iss, sub, aud, exp essential; iss = sub); the jti is checked afterwards
    against PostgreSQL, which a synchronous hook cannot do."""

    def __init__(self, audiences: list[str]):
        super().__init__(validate_jti=False, leeway=LEEWAY)
        self._audiences = audiences

    def get_audiences(self) -> list[str]:
        return self._audiences


_DUMMY_HASH: str | None = None


def _verify_secret(secret_hash: str | None, secret: str) -> bool:
    global _DUMMY_HASH
    if secret_hash is None:
        # An unknown client costs as much as a known one, so timing does not tell them apart.
        _DUMMY_HASH = _DUMMY_HASH or _hasher.hash(secrets.token_urlsafe(32))
        secret_hash = _DUMMY_HASH
        secret = secret + "\x00"  # never matches
    try:
        return _hasher.verify(secret_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


async def _authenticate_basic(session: AsyncSession, authorization: str) -> ClientRegistration:
    try:
        client_id, secret = extract_basic_authorization({"Authorization": authorization})
    except ValueError:  # not base64, or not UTF-8
        client_id, secret = None, None
    if not client_id or secret is None:
        raise _invalid_client("malformed Basic credentials")
    found = await registration(session, client_id)
    usable = found is not None and found.auth_method == "client_secret_basic"
    matches = await asyncio.to_thread(_verify_secret, found.secret_hash if usable else None, secret)
    if not usable:
        raise _invalid_client("unknown, revoked or not a secret client", client_id)
    if not matches:
        raise _invalid_client("wrong secret", client_id)
    return found


async def _authenticate_assertion(
    session: AsyncSession, settings: Settings, assertion_type: str | None, assertion: str | None
) -> ClientRegistration:
    if assertion_type != ASSERTION_TYPE or not assertion:
        raise _invalid_client("client_assertion_type or client_assertion missing or wrong")
    if len(assertion) > MAX_ASSERTION_BYTES:
        raise _invalid_client("assertion too large")
    rules = _AssertionRules([settings.token_endpoint, settings.issuer_url])
    try:
        header, unverified = rules.extract_assertion(assertion)
    except (OAuth2Error, RecursionError):  # RecursionError: header or claims JSON nested too deeply to parse
        raise _invalid_client("malformed assertion") from None
    client_id = unverified.get("sub")
    if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
        raise _invalid_client("assertion without a usable sub")
    found = await registration(session, client_id)
    if found is None or found.auth_method != "private_key_jwt" or found.public_jwk is None:
        raise _invalid_client("unknown, revoked or not a private_key_jwt client", client_id)
    if any(name in header for name in _KEY_LOCATION_HEADERS):
        raise _invalid_client("assertion header names key material or critical extensions", client_id)
    alg = header.get("alg")
    if alg not in _assertion_algorithms(found.public_jwk):
        raise _invalid_client(f"assertion algorithm {str(alg)[:20]} not allowed for the registered key", client_id)
    key = JWKRegistry.import_key(found.public_jwk)
    if _rsa_size_problem(key):  # registered before sizes were checked: register a new key
        raise _invalid_client("the registered RSA key's size is no longer accepted", client_id)
    try:
        claims = jwt.decode(assertion, key, algorithms=[alg]).claims
        rules.verify_claims(claims)
    except (JoseError, OAuth2Error, ValueError):
        raise _invalid_client("assertion signature or claims invalid", client_id) from None
    now = time.time()
    exp, iat, jti = claims["exp"], claims.get("iat"), claims.get("jti")
    if not isinstance(exp, int | float) or exp > now + settings.client_assertion_max_lifetime + LEEWAY:
        raise _invalid_client("assertion exp too far in the future", client_id)
    if iat is not None and (not isinstance(iat, int | float) or iat > now + LEEWAY):
        raise _invalid_client("assertion issued in the future", client_id)
    if not isinstance(jti, str) or not 0 < len(jti) <= 200 or not jti.isprintable():
        raise _invalid_client("assertion without a usable jti", client_id)
    if not await _first_use(session, client_id, jti, exp + LEEWAY):
        raise _invalid_client("assertion replayed (jti seen before)", client_id)
    return found


async def _first_use(session: AsyncSession, client_id: str, jti: str, expires: float) -> bool:
    """Record the jti; False when it was recorded before (by any process: the primary key decides)."""
    await session.execute(delete(ClientAssertionJti).where(ClientAssertionJti.expires_at < datetime.now(UTC)))
    recorded = await session.scalar(
        insert(ClientAssertionJti)
        .values(client_id=client_id, jti=jti, expires_at=datetime.fromtimestamp(expires, UTC))
        .on_conflict_do_nothing()
        .returning(ClientAssertionJti.jti)
    )
    return recorded is not None


def _requested_scope(form: Mapping[str, str], client: ClientRegistration) -> list[str]:
    if "scope" not in form:
        return sorted(r.value for r in client.roles)
    asked = form["scope"].split(" ")
    # RFC 6749 §5.2 counts a malformed scope (empty, an empty token, a character outside §3.3's scope-token such
    # as the U+FFFD that %FF decodes to) as invalid_scope, like an unknown one.
    if not all(asked) or any(not (0x21 <= ord(c) <= 0x7E and c not in '"\\') for s in asked for c in s):
        raise _invalid_scope("scope must be space-separated scope tokens", "malformed scope", client.client_id)
    if not set(asked) <= {r.value for r in client.roles}:
        raise _invalid_scope(
            "the requested scope is unknown or exceeds the client's registration",
            f"scope {' '.join(asked)[:200]} exceeds the registration",
            client.client_id,
        )
    return sorted(set(asked))


async def grant_client_credentials(
    session: AsyncSession, settings: Settings, *, authorization: str | None, form: Mapping[str, str]
) -> dict[str, Any]:
    """The token response for a client-credentials request, or TokenRequestRefused.

    Writes: the assertion's jti (kept even when the request is refused later, so an assertion is never worth two
    tries) and, on success, the audit event `auth.client_token_issued`."""
    grant_type = form.get("grant_type")
    if not grant_type:
        raise invalid_request("grant_type is required")
    if grant_type != GRANT_TYPE:
        raise TokenRequestRefused(_UnsupportedGrantType(grant_type), f"unsupported grant_type {grant_type[:60]}")
    has_assertion = "client_assertion" in form or "client_assertion_type" in form
    if authorization and has_assertion:
        raise invalid_request("use exactly one client authentication method")
    if authorization:
        if authorization.split(" ", 1)[0].lower() != "basic":
            raise _invalid_client("Authorization header is not Basic")
        client = await _authenticate_basic(session, authorization)
        method = "client_secret_basic"
    elif has_assertion:
        client = await _authenticate_assertion(
            session, settings, form.get("client_assertion_type"), form.get("client_assertion")
        )
        method = "private_key_jwt"
    else:
        raise _invalid_client("no client authentication")
    if form.get("client_id") not in (None, client.client_id):
        raise _invalid_client("client_id differs from the authenticated client", client.client_id)
    scope = _requested_scope(form, client)

    key = await platform_keys.current_signing_key(session, settings)
    now = int(time.time())
    jti = str(uuid.uuid4())
    claims = {
        "iss": settings.issuer_url,
        "sub": client.client_id,
        "aud": settings.token_audience,
        "client_id": client.client_id,
        "scope": " ".join(scope),
        "iat": now,
        "nbf": now,
        "exp": now + settings.access_token_lifetime,
        "jti": jti,
    }
    token = platform_keys.sign_access_token(key, claims)
    await append(
        session,
        actor=f"client:{client.client_id}",
        action="auth.client_token_issued",
        institution=client.institution_slug,
        target=client.client_id,
        details={"auth_method": method, "scope": scope, "jti": jti, "kid": key.kid,
                 "expires_in": settings.access_token_lifetime},
    )  # fmt: skip
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": settings.access_token_lifetime,
        "scope": " ".join(scope),
    }


async def audit_refusal(session: AsyncSession, refused: TokenRequestRefused) -> None:
    """The refusal with its real reason, for stewards reading the log (the caller only saw the error code)."""
    details: dict[str, Any] = {"error": refused.error.error, "reason": refused.reason}
    if refused.client_id:
        details["client_id"] = refused.client_id[:64]
    await append(session, actor="system:token-endpoint", action="auth.client_token_refused", outcome="denied",
                 details=details)  # fmt: skip


# --- what the token validator asks of the platform's own issuer -----------------------------------------------


class PlatformDirectory:
    """The platform issuer's keys and client registry, read from PostgreSQL: no HTTP, and a rotation or a
    revocation is seen by every process at once (registrations are read per token; public keys are cached for a
    minute, and a kid never seen is looked up by primary key)."""

    KEY_CACHE_SECONDS = 60.0
    MAX_CACHED_KEYS = 32

    def __init__(self, database: Database):
        self._database = database
        self._keys: dict[str, tuple[Any, datetime | None, float]] = {}

    async def signing_key(self, kid: str | None) -> Any | None:
        if not isinstance(kid, str) or not 0 < len(kid) <= 100:
            return None
        cached = self._keys.get(kid)
        if cached is None or time.monotonic() - cached[2] > self.KEY_CACHE_SECONDS:
            async with self._database.unit_of_work() as session:
                found = await platform_keys.published_key(session, kid)
            if found is None:
                self._keys.pop(kid, None)
                return None
            if len(self._keys) >= self.MAX_CACHED_KEYS:
                self._keys.clear()
            cached = self._keys[kid] = (JWKRegistry.import_key(found[0]), found[1], time.monotonic())
        key, published_until, _ = cached
        if published_until is not None and published_until <= datetime.now(UTC):
            return None
        return key

    async def registration(self, client_id: str) -> ClientRegistration | None:
        if not _CLIENT_ID.fullmatch(client_id):
            return None
        async with self._database.unit_of_work() as session:
            return await registration(session, client_id)
