"""DevIdentityProvider: the dev issuers' state, the test helpers, and the loopback server that serves them."""

from __future__ import annotations

import re
import secrets
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from cellcommons.auth.dev_idp.keys import SigningKey, new_signing_key, sign_compact
from cellcommons.auth.dev_idp.users import (
    REALM_ROLES_ISSUERS,
    RoleMapping,
    demo_user,
    orcid_claims,
    role_claims,
    role_mapping,
    subject,
)
from cellcommons.settings import Environment, Settings, SettingsError

PORTAL_CLIENT_ID = "cellcommons-portal"
# RFC 8252 §7.3: a loopback redirect URI registered without a port matches any port, so the portal can run on a
# free port. Register further clients (or exact URIs) with `register_client`.
PORTAL_REDIRECT_URIS = ("http://127.0.0.1/auth/callback", "http://localhost/auth/callback")
DEFAULT_AUDIENCE = "cellcommons"
# One issuer signs with ES256 so the platform does not silently assume RSA.
ES256_ISSUERS = frozenset({"stroma-bio"})
_LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
READY_TIMEOUT = 10.0


@dataclass(frozen=True)
class Client:
    client_id: str
    redirect_uris: tuple[str, ...]
    secret: str | None = None  # None: a public client (token_endpoint_auth_method "none")

    def allows(self, redirect_uri: str) -> bool:
        if redirect_uri in self.redirect_uris:
            return True
        asked = urlsplit(redirect_uri)
        for registered in map(urlsplit, self.redirect_uris):
            if registered.hostname in _LOOPBACK and registered.port is None and asked.hostname == registered.hostname:
                if asked._replace(netloc=registered.netloc) == registered:
                    return True
        return False


@dataclass
class Issuer:
    slug: str
    algorithm: str
    realm_roles: bool
    keys: list[SigningKey]  # the last one signs; all are published
    clients: dict[str, Client] = field(default_factory=dict)
    jwks_down: bool = False

    @property
    def current_key(self) -> SigningKey:
        return self.keys[-1]


@dataclass(frozen=True)
class CodeGrant:
    slug: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    username: str
    scope: str
    nonce: str | None
    auth_time: int
    expires_at: float


def _refuse_production(settings: Settings) -> None:
    if settings.environment == Environment.production:
        raise SettingsError(
            ["the development identity provider serves demo and test only; it never runs with environment=production"]
        )


class DevIdentityProvider:
    """One OIDC issuer per institution slug, all served by one ASGI app on 127.0.0.1 and a free port.

    Issuer URLs are `http://127.0.0.1:<port>/realms/<slug>` (Keycloak's layout). Use as a context manager or
    call `start()` / `stop()`. Tokens can also be minted directly (`issue_access_token`, `sign`) for tests.
    """

    def __init__(
        self,
        institutions: Iterable[str] | None,
        settings: Settings,
        *,
        audience: str = DEFAULT_AUDIENCE,
        token_lifetime: int = 300,
        code_lifetime: int = 60,
        realm_roles_issuers: Iterable[str] = REALM_ROLES_ISSUERS,
        es256_issuers: Iterable[str] = ES256_ISSUERS,
    ):
        _refuse_production(settings)
        self.settings = settings
        if institutions is None:
            from cellcommons.demo.consortium import INSTITUTIONS

            institutions = [i["slug"] for i in INSTITUTIONS]
        slugs = list(institutions)
        bad = [s for s in slugs if not _SLUG.fullmatch(s)]
        if not slugs or bad or len(set(slugs)) != len(slugs):
            raise ValueError(f"institution slugs must be unique, lower-case and URL-safe: {slugs!r}")
        self.audience = audience
        self.token_lifetime = token_lifetime
        self.code_lifetime = code_lifetime
        # Tests may replace the clock (monkeypatch) to expire codes or mint tokens "in the past".
        self.clock: Callable[[], float] = time.time
        # Requests per URL path, e.g. requests[idp.jwks_path(slug)]: lets tests assert what went over the wire.
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._codes: dict[str, CodeGrant] = {}
        realm, es256 = set(realm_roles_issuers), set(es256_issuers)
        self._issuers: dict[str, Issuer] = {}
        for slug in slugs:
            algorithm = "ES256" if slug in es256 else "RS256"
            self._issuers[slug] = Issuer(slug, algorithm, slug in realm, [new_signing_key(algorithm)])
            self.register_client(slug, PORTAL_CLIENT_ID, PORTAL_REDIRECT_URIS)
        self._initial_keys = {slug: list(i.keys) for slug, i in self._issuers.items()}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port: int | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> DevIdentityProvider:
        _refuse_production(self.settings)
        if self._server is not None:
            raise RuntimeError("the dev identity provider is already running")
        from cellcommons.auth.dev_idp.app import build_app

        # Bind first and hand uvicorn the socket: no window in which another process takes a "free" port.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(
            build_app(self), lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="dev-idp", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the dev identity provider did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(READY_TIMEOUT)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
        self.port = None

    def __enter__(self) -> DevIdentityProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Back to the state after construction (keys, JWKS up, no codes, no counted requests, real clock)."""
        with self._lock:
            for slug, issuer in self._issuers.items():
                issuer.keys = list(self._initial_keys[slug])
                issuer.jwks_down = False
            self._codes.clear()
            self.requests.clear()
            self.clock = time.time

    # --- URLs ------------------------------------------------------------------------------------------------

    @property
    def slugs(self) -> list[str]:
        return list(self._issuers)

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the dev identity provider is not running: call start() first")
        return f"http://127.0.0.1:{self.port}"

    def issuer(self, slug: str) -> str:
        self._issuer(slug)
        return f"{self.base_url}/realms/{slug}"

    def discovery_url(self, slug: str) -> str:
        return f"{self.issuer(slug)}/.well-known/openid-configuration"

    def jwks_path(self, slug: str) -> str:
        return f"/realms/{slug}/protocol/openid-connect/certs"

    def jwks_uri(self, slug: str) -> str:
        return f"{self.issuer(slug)}/protocol/openid-connect/certs"

    def authorization_endpoint(self, slug: str) -> str:
        return f"{self.issuer(slug)}/protocol/openid-connect/auth"

    def token_endpoint(self, slug: str) -> str:
        return f"{self.issuer(slug)}/protocol/openid-connect/token"

    # --- clients and roles -----------------------------------------------------------------------------------

    def register_client(
        self, slug: str, client_id: str, redirect_uris: Iterable[str], secret: str | None = None
    ) -> Client:
        """Register (or replace) a client of issuer `slug`; with a secret it must use client_secret_basic."""
        client = Client(client_id, tuple(redirect_uris), secret)
        with self._lock:
            self._issuer(slug).clients[client_id] = client
        return client

    def client(self, slug: str, client_id: str | None) -> Client | None:
        return self._issuer(slug).clients.get(client_id or "")

    def role_mapping(self, slug: str) -> RoleMapping:
        """The claim path and {claim value → platform role} the platform should register for this issuer."""
        return role_mapping(slug, realm_roles=self._issuer(slug).realm_roles)

    def subject(self, slug: str, username: str) -> str:
        demo_user(username)
        return subject(slug, username)

    # --- keys ------------------------------------------------------------------------------------------------

    def algorithm(self, slug: str) -> str:
        return self._issuer(slug).algorithm

    def private_key(self, slug: str) -> SigningKey:
        with self._lock:
            return self._issuer(slug).current_key

    def kid(self, slug: str) -> str:
        return self.private_key(slug).kid

    def public_jwk(self, slug: str) -> dict[str, Any]:
        return self.private_key(slug).as_dict(private=False)

    def jwks(self, slug: str) -> dict[str, Any]:
        """What the issuer's jwks_uri serves: the public half of every published key."""
        with self._lock:
            return {"keys": [k.as_dict(private=False) for k in self._issuer(slug).keys]}

    def rotate_key(self, slug: str) -> str:
        """A new key signs from now on; the old public keys stay published until `retire_old_keys`."""
        issuer = self._issuer(slug)
        key = new_signing_key(issuer.algorithm)
        with self._lock:
            issuer.keys.append(key)
        return key.kid

    def retire_old_keys(self, slug: str) -> None:
        with self._lock:
            issuer = self._issuer(slug)
            issuer.keys = [issuer.current_key]

    def set_jwks_down(self, slug: str, down: bool = True) -> None:
        """While down, the issuer's jwks_uri answers 503 (discovery still works, like a failing key endpoint)."""
        with self._lock:
            self._issuer(slug).jwks_down = down

    def is_jwks_down(self, slug: str) -> bool:
        return self._issuer(slug).jwks_down

    # --- tokens ----------------------------------------------------------------------------------------------

    def header(self, slug: str, typ: str | None = "at+jwt", **extra: Any) -> dict[str, Any]:
        """The header the issuer normally writes (alg, kid, typ), plus `extra`; `typ=None` leaves typ out."""
        header: dict[str, Any] = {"alg": self.algorithm(slug), "kid": self.kid(slug)}
        if typ is not None:
            header["typ"] = typ
        return {**header, **extra}

    def sign(self, slug: str, header: dict[str, Any], claims: dict[str, Any], key: SigningKey | None = None) -> str:
        """Sign exactly `header` and `claims` with the issuer's current private key (or `key`).

        Nothing is added or checked: tests use this to craft what a validator must refuse (`iss` lists, no
        `exp`, `crit`, `jku`, `alg: none`, …). `idp.header(slug)` gives the usual header to start from.
        """
        return sign_compact(header, claims, key if key is not None else self.private_key(slug))

    def access_token_claims(
        self,
        slug: str,
        username: str,
        *,
        audience: str | list[str] | None = None,
        lifetime: int | None = None,
        client_id: str = PORTAL_CLIENT_ID,
        scope: str = "openid profile email",
    ) -> dict[str, Any]:
        """RFC 9068 claims for `username` at issuer `slug`, with the issuer's role claim."""
        user = demo_user(username)
        now = int(self.clock())
        return {
            "iss": self.issuer(slug),
            "sub": subject(slug, username),
            "aud": audience if audience is not None else self.audience,
            "exp": now + (lifetime if lifetime is not None else self.token_lifetime),
            "iat": now,
            "nbf": now,
            "jti": str(uuid.uuid4()),
            "client_id": client_id,
            "scope": scope,
            "preferred_username": username,
            **role_claims(slug, user, self._issuer(slug).realm_roles),
            **orcid_claims(slug, username),
        }

    def issue_access_token(
        self,
        slug: str,
        username: str,
        audience: str | list[str] | None = None,
        lifetime: int | None = None,
        *,
        client_id: str = PORTAL_CLIENT_ID,
        scope: str = "openid profile email",
        **claim_overrides: Any,
    ) -> str:
        """A signed RFC 9068 access token (typ at+jwt). Overrides replace claims; an override of None drops one."""
        claims = self.access_token_claims(
            slug, username, audience=audience, lifetime=lifetime, client_id=client_id, scope=scope
        )
        return self.sign(slug, self.header(slug, "at+jwt"), _apply(claims, claim_overrides))

    def issue_id_token(
        self,
        slug: str,
        username: str,
        client_id: str = PORTAL_CLIENT_ID,
        nonce: str | None = None,
        lifetime: int | None = None,
        *,
        auth_time: int | None = None,
        **claim_overrides: Any,
    ) -> str:
        """A signed OIDC ID token (typ JWT, aud = client_id, nonce when given, no client_id/scope claims)."""
        user = demo_user(username)
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer(slug),
            "sub": subject(slug, username),
            "aud": client_id,
            "exp": now + (lifetime if lifetime is not None else self.token_lifetime),
            "iat": now,
            "auth_time": auth_time if auth_time is not None else now,
            "azp": client_id,
            "name": user.name,
            "preferred_username": username,
            "email": f"{username}@{slug}.example",
            "email_verified": True,
            **role_claims(slug, user, self._issuer(slug).realm_roles),
            **orcid_claims(slug, username),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        return self.sign(slug, self.header(slug, "JWT"), _apply(claims, claim_overrides))

    # --- authorization codes (used by the app) ---------------------------------------------------------------

    def new_code(self, grant_fields: dict[str, Any]) -> str:
        code = secrets.token_urlsafe(32)
        grant = CodeGrant(**grant_fields, auth_time=int(self.clock()), expires_at=self.clock() + self.code_lifetime)
        with self._lock:
            self._codes[code] = grant
        return code

    def take_code(self, code: str) -> CodeGrant | None:
        """The grant for `code`, removed on first use whatever happens next: a code is never worth two tries."""
        with self._lock:
            return self._codes.pop(code, None)

    def _issuer(self, slug: str) -> Issuer:
        try:
            return self._issuers[slug]
        except KeyError:
            raise KeyError(f"no dev issuer {slug!r}; known: {', '.join(self._issuers)}") from None


def _apply(claims: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = {**claims, **overrides}
    return {name: value for name, value in merged.items() if value is not None}
