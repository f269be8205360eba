"""The platform's own token-signing keys: kept in PostgreSQL, the private half sealed, rotated without breaking
the tokens already out.

- Keys are ES256 (P-256), `kid` the RFC 7638 thumbprint. The newest unretired key signs.
- The private JWK is stored as a JWE (`dir`, `A256GCM`) under a key derived (scrypt) from
  `settings.signing_key_secret`; the database alone does not give the key away. Production refuses the
  development secret.
- Rotation retires the signing key and creates a new one. A retired key stays in the JWKS until
  `published_until` = retirement + the access-token lifetime + a minute, i.e. until every token it signed has
  expired; later rotations delete it.
- The first key is created on demand (API start or first token), under an advisory lock so that concurrent
  processes agree on one key.
"""

from __future__ import annotations

import functools
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jwe, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OctKey
from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.errors import Unavailable
from cellcommons.institutions.models import PlatformIssuer, PlatformSigningKey
from cellcommons.settings import Settings

ALGORITHM = "ES256"
RETIREMENT_MARGIN = timedelta(seconds=60)  # on top of the token lifetime: clock skew and validator leeway
_SEAL = {"alg": "dir", "enc": "A256GCM"}
_LOCK = 0x6363_6B65_7973  # pg_advisory_xact_lock key for creating / rotating keys ("cckeys")


@functools.lru_cache(maxsize=4)
def _sealing_key(secret: str) -> OctKey:
    raw = hashlib.scrypt(secret.encode(), salt=b"cellcommons/platform-signing-key", n=2**14, r=8, p=1, dklen=32)
    return OctKey.import_key(raw)


def _seal(key: ECKey, settings: Settings) -> str:
    plaintext = json.dumps(key.as_dict(private=True)).encode()
    sealing = _sealing_key(settings.signing_key_secret.get_secret_value())
    return jwe.encrypt_compact({**_SEAL, "kid": key.kid}, plaintext, sealing, algorithms=list(_SEAL.values()))


@functools.lru_cache(maxsize=16)
def _unseal(sealed: str, secret: str) -> ECKey:
    try:
        opened = jwe.decrypt_compact(sealed, _sealing_key(secret), algorithms=list(_SEAL.values()))
        return ECKey.import_key(json.loads(opened.plaintext))
    except (JoseError, ValueError):
        raise Unavailable(
            "cannot open the platform's signing key: CELLCOMMONS_SIGNING_KEY_SECRET is not the secret that sealed it"
        ) from None


def new_key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"use": "sig", "alg": ALGORITHM}, auto_kid=True)


async def _lock(session: AsyncSession) -> None:
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})


async def _current_row(session: AsyncSession) -> PlatformSigningKey | None:
    return await session.scalar(
        select(PlatformSigningKey)
        .where(PlatformSigningKey.retired_at.is_(None))
        .order_by(PlatformSigningKey.created_at.desc(), PlatformSigningKey.kid)
        .limit(1)
    )


async def _add_key(session: AsyncSession, settings: Settings) -> PlatformSigningKey:
    key = new_key()
    row = PlatformSigningKey(
        kid=key.kid,
        algorithm=ALGORITHM,
        public_jwk=key.as_dict(private=False),
        sealed_private_jwk=_seal(key, settings),
        created_at=datetime.now(UTC),
    )
    session.add(row)
    await session.flush()
    return row


async def current_signing_key(session: AsyncSession, settings: Settings) -> ECKey:
    """The key that signs now; created (once, whichever process asks first) when there is none."""
    row = await _current_row(session)
    if row is None:
        await _lock(session)
        row = await _current_row(session) or await _add_key(session, settings)
    return _unseal(row.sealed_private_jwk, settings.signing_key_secret.get_secret_value())


async def rotate_signing_key(session: AsyncSession, settings: Settings) -> tuple[str, list[tuple[str, datetime]]]:
    """A new key signs from now on. Returns its kid and the (kid, published until) of every retired key still
    published; keys whose tokens have all expired are deleted."""
    await _lock(session)
    now = datetime.now(UTC)
    until = now + timedelta(seconds=settings.access_token_lifetime) + RETIREMENT_MARGIN
    await session.execute(
        update(PlatformSigningKey)
        .where(PlatformSigningKey.retired_at.is_(None))
        .values(retired_at=now, published_until=until)
    )
    await session.execute(delete(PlatformSigningKey).where(PlatformSigningKey.published_until < now))
    row = await _add_key(session, settings)
    retired = await session.execute(
        select(PlatformSigningKey.kid, PlatformSigningKey.published_until)
        .where(PlatformSigningKey.retired_at.is_not(None))
        .order_by(PlatformSigningKey.created_at)
    )
    return row.kid, [(kid, published_until) for kid, published_until in retired]


def _published(now: datetime):
    return (PlatformSigningKey.published_until.is_(None)) | (PlatformSigningKey.published_until > now)


async def published_jwks(session: AsyncSession) -> dict[str, Any]:
    """What /.well-known/jwks.json serves: the public half of the signing key and of every retired key whose
    tokens may still be valid, newest first."""
    rows = await session.scalars(
        select(PlatformSigningKey.public_jwk)
        .where(_published(datetime.now(UTC)))
        .order_by(PlatformSigningKey.created_at.desc(), PlatformSigningKey.kid)
    )
    return {"keys": list(rows)}


async def published_key(session: AsyncSession, kid: str) -> tuple[dict, datetime | None] | None:
    """The public JWK `kid` and the end of its publication (None: still signing), if it is published."""
    row = (
        await session.execute(
            select(PlatformSigningKey.public_jwk, PlatformSigningKey.published_until).where(
                PlatformSigningKey.kid == kid, _published(datetime.now(UTC))
            )
        )
    ).one_or_none()
    return None if row is None else (row.public_jwk, row.published_until)


async def ensure_platform_issuer(session: AsyncSession, settings: Settings) -> None:
    """Register the platform as an issuer (from settings: issuer URL, audience) and make sure it has a key.

    One deployment has one public URL: entries of other URLs are removed, so changing CELLCOMMONS_PUBLIC_URL
    does not leave the old issuer trusted."""
    await _lock(session)
    await session.execute(delete(PlatformIssuer).where(PlatformIssuer.issuer_url != settings.issuer_url))
    existing = await session.get(PlatformIssuer, settings.issuer_url)
    if existing is None:
        session.add(PlatformIssuer(issuer_url=settings.issuer_url, audience=settings.token_audience))
    elif existing.audience != settings.token_audience:
        existing.audience = settings.token_audience
        existing.updated_at = datetime.now(UTC)
    await session.flush()
    await current_signing_key(session, settings)


def sign_access_token(key: ECKey, claims: dict[str, Any]) -> str:
    """An RFC 9068 JWT access token (header typ at+jwt) signed with `key`."""
    return jwt.encode({"alg": ALGORITHM, "typ": "at+jwt", "kid": key.kid}, claims, key, algorithms=[ALGORITHM])
