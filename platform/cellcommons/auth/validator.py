"""Bearer-token validation for many issuers, each trusted for its own institution only.

Order matters: everything that can be decided without a key (size, structure, header, `iss`, registry) is
decided first, so a token from an unknown issuer never causes an outbound request. Keys come from the JWKS
URI pinned in the registry, cached per issuer; an unknown `kid` triggers at most one refetch per interval, and
an issuer whose JWKS endpoint is down keeps working with the keys already cached.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from cellcommons.auth.orcid import canonical_orcid
from cellcommons.auth.principal import Principal, Role
from cellcommons.errors import CellCommonsError
from cellcommons.institutions.service import TrustedIssuer

MAX_TOKEN_BYTES = 8192
# Header parameters that would make us fetch or trust key material named by the token itself.
FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c")
ACCESS_TOKEN_TYPES = {"at+jwt", "application/at+jwt"}


class TokenRejected(CellCommonsError):
    """401 with a short reason; never echoes the token."""

    code = "invalid_token"
    status = 401


@dataclass
class _CachedKeys:
    keys: KeySet | None = None
    fetched_at: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failure: str | None = None  # why the last fetch failed; None after a good one

    def status(self) -> str:
        count = len(self.keys.keys) if self.keys is not None else 0
        if self.failure is None:
            return f"ok: {count} keys"
        if count:
            return f"refresh failing ({self.failure}); its {count} cached keys still verify tokens"
        return f"unreachable ({self.failure}); no keys cached"


IssuerLookup = Callable[[str], Awaitable[TrustedIssuer | None]]


class TokenValidator:
    def __init__(
        self,
        lookup: IssuerLookup,
        http: httpx.AsyncClient,
        *,
        leeway: float = 30.0,
        refetch_interval: float = 60.0,
        max_token_bytes: int = MAX_TOKEN_BYTES,
        clock: Callable[[], float] = time.time,
    ):
        self._lookup = lookup
        self._http = http
        self.leeway = leeway
        self.refetch_interval = refetch_interval
        self.max_token_bytes = max_token_bytes
        self._clock = clock
        self._keys: dict[str, _CachedKeys] = {}

    def key_status(self) -> dict[str, str]:
        """Each issuer this process has needed keys of, and how its JWKS fetches fare. Reported by /readyz but
        never a reason to be unready: cached keys keep verifying while a partner's endpoint is down."""
        return {issuer: cache.status() for issuer, cache in sorted(self._keys.items())}

    async def validate(self, token: str) -> Principal:
        header, claims, issuer = await self._verified(token)
        _check_audience(claims, issuer.audience)
        _check_access_token(header, claims, issuer)
        if issuer.clients is not None:
            return await _client_principal(claims, issuer)
        return _principal(claims, issuer)

    async def verified_claims(self, token: str, audience: str) -> dict:
        """The claims of a JWT of any type from a registered issuer (an OIDC ID token), checked as a bearer token
        is short of its type: size, headers, the registry's algorithms and keys, signature, times, and `audience`."""
        _, claims, _ = await self._verified(token)
        _check_audience(claims, audience)
        return claims

    async def _verified(self, token: str) -> tuple[dict, dict, TrustedIssuer]:
        """The header, claims and issuer of a token signed by a registered issuer's key and current."""
        if len(token) > self.max_token_bytes:
            raise TokenRejected("token too large")
        try:
            signed = jws.extract_compact(token.encode("ascii"))
        except (JoseError, ValueError, UnicodeError):
            raise TokenRejected("malformed token") from None
        header = signed.headers()
        claims = _claims(signed.payload)
        issuer = await self._trusted_issuer(claims)
        alg = _checked_header(header, issuer)
        key = await self._key(issuer, header.get("kid"))
        try:
            verified = jws.validate_compact(signed, key, algorithms=[alg])
        except JoseError:
            verified = False
        if not verified:
            raise TokenRejected("bad signature")
        self._check_times(claims)
        return header, claims, issuer

    async def _trusted_issuer(self, claims: dict) -> TrustedIssuer:
        iss = claims.get("iss")
        if not isinstance(iss, str):
            raise TokenRejected("iss must be a single string")
        issuer = await self._lookup(iss)
        if issuer is None:
            raise TokenRejected("unknown issuer")
        return issuer

    def _check_times(self, claims: dict) -> None:
        now = self._clock()
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if not _is_number(exp):
            raise TokenRejected("exp missing")
        if now > exp + self.leeway:
            raise TokenRejected("token expired")
        if nbf is not None and (not _is_number(nbf) or now + self.leeway < nbf):
            raise TokenRejected("token not yet valid")
        if iat is not None and (not _is_number(iat) or now + self.leeway < iat):
            raise TokenRejected("token issued in the future")

    async def _key(self, issuer: TrustedIssuer, kid: str | None):
        if issuer.clients is not None:  # the platform's own keys, read from its database
            key = await issuer.clients.signing_key(kid)
            if key is None:
                raise TokenRejected("unknown signing key")
            return key
        cache = self._keys.setdefault(issuer.issuer_url, _CachedKeys())
        key = _find(cache.keys, kid)
        if key is not None:
            return key
        async with cache.lock:
            key = _find(cache.keys, kid)
            if key is None and self._clock() - cache.fetched_at >= self.refetch_interval:
                await self._refetch(issuer, cache)
                key = _find(cache.keys, kid)
        if key is None:
            raise TokenRejected("unknown signing key")
        return key

    async def _refetch(self, issuer: TrustedIssuer, cache: _CachedKeys) -> None:
        # Counted as an attempt even when it fails: an outage must not turn every request into a fetch.
        cache.fetched_at = self._clock()
        try:
            response = await self._http.get(issuer.jwks_uri)
            response.raise_for_status()
            cache.keys = KeySet.import_key_set(response.json())
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            cache.failure = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
            return  # keep whatever keys are cached
        cache.failure = None


def _claims(payload: bytes) -> dict:
    try:
        claims = json.loads(payload)
    except (ValueError, RecursionError):  # a few KB of "[[[[" exhaust the parser's stack: malformed, not a 500
        raise TokenRejected("malformed token") from None
    if not isinstance(claims, dict):
        raise TokenRejected("malformed token")
    return claims


def _checked_header(header: dict, issuer: TrustedIssuer) -> str:
    for name in FORBIDDEN_HEADERS:
        if name in header:
            raise TokenRejected(f"header {name} is not accepted")
    if "crit" in header:
        # We understand no critical extensions, so any listed one must be refused (RFC 7515 §4.1.11).
        raise TokenRejected("unknown critical header")
    alg = header.get("alg")
    if alg not in issuer.algorithms:
        raise TokenRejected("algorithm not allowed")
    return alg


def _find(keys: KeySet | None, kid: str | None):
    if keys is None:
        return None
    if kid is None:
        return keys.keys[0] if len(keys.keys) == 1 else None
    for key in keys.keys:
        if key.kid == kid:
            return key
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_audience(claims: dict, audience: str) -> None:
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if audience not in audiences:
        raise TokenRejected("wrong audience")


def _check_access_token(header: dict, claims: dict, issuer: TrustedIssuer) -> None:
    if issuer.access_token_claim is None:
        is_access = str(header.get("typ", "")).lower() in ACCESS_TOKEN_TYPES
    else:
        is_access = _at_path(claims, issuer.access_token_claim) == issuer.access_token_value
    if not is_access:
        raise TokenRejected("not an access token")


def _at_path(claims: dict, path: str) -> object:
    value: object = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _roles(claims: dict, issuer: TrustedIssuer) -> frozenset[Role]:
    roles = {Role.reader}  # every signed-in member of a partner institution may read
    if issuer.role_claim:
        values = _at_path(claims, issuer.role_claim)
        values = [values] if isinstance(values, str) else values if isinstance(values, list) else []
        roles |= {Role(issuer.role_mapping[v]) for v in values if isinstance(v, str) and v in issuer.role_mapping}
    return frozenset(roles)


def _principal(claims: dict, issuer: TrustedIssuer) -> Principal:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise TokenRejected("sub missing")
    client_id = claims.get("client_id", claims.get("azp"))
    token_id = claims.get("jti")
    return Principal(
        institution_id=issuer.institution_id,
        institution_slug=issuer.institution_slug,
        subject=subject,
        roles=_roles(claims, issuer),
        client_id=client_id if isinstance(client_id, str) else None,
        token_id=token_id if isinstance(token_id, str) else None,
        issuer=issuer.issuer_url,
        orcid=canonical_orcid(_at_path(claims, issuer.orcid_claim)) if issuer.orcid_claim else None,
    )


async def _client_principal(claims: dict, issuer: TrustedIssuer) -> Principal:
    """A platform token: the institution and roles come from the machine client's registration (roles narrowed
    to the token's scope), never from a claim; a revoked client's tokens stop working at once."""
    client_id = claims.get("client_id")
    if not isinstance(client_id, str) or not client_id or claims.get("sub") != client_id:
        raise TokenRejected("client_id missing")
    registration = await issuer.clients.registration(client_id)
    if registration is None:
        raise TokenRejected("unknown or revoked client")
    scope = claims.get("scope")
    granted = set(scope.split(" ")) if isinstance(scope, str) else set()
    token_id = claims.get("jti")
    return Principal(
        institution_id=registration.institution_id,
        institution_slug=registration.institution_slug,
        subject=client_id,
        roles=frozenset({Role.reader} | {role for role in registration.roles if role.value in granted}),
        client_id=client_id,
        token_id=token_id if isinstance(token_id, str) else None,
        issuer=issuer.issuer_url,
    )
