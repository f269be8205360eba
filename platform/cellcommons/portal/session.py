"""The portal's session: a signed, HttpOnly, SameSite cookie holding who signed in, and CSRF tokens.

The cookie carries no token: after sign-in the platform keeps only the verified principal (institution and
roles from the issuer registry), when the session ends and a random session id. Signing out records that id as
ended on the server (`portal_ended_session`), so a copy of the cookie stops working too; every request that
carries a signed-in session looks its id up once (`EndedSessions`).
"""

from __future__ import annotations

import hmac
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from fastapi import Request
from fastapi.responses import Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.types import ASGIApp, Receive, Scope, Send

from cellcommons.auth.principal import Principal, Role
from cellcommons.errors import Unavailable
from cellcommons.outages import OUTAGE_TYPES, unavailable_from

SESSION_COOKIE = "cc_session"
LOGIN_COOKIE = "cc_login"
MAX_SESSION_SECONDS = 8 * 3600
LOGIN_SECONDS = 600


def new_session_id() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class PortalSession:
    principal: Principal | None
    csrf: str
    expires_at: float
    session_id: str = field(default_factory=new_session_id)

    @property
    def signed_in(self) -> bool:
        return self.principal is not None and time.time() < self.expires_at


class Sessions:
    def __init__(self, secret: str, secure: bool):
        self._session = URLSafeTimedSerializer(secret, salt="cellcommons-portal-session")
        self._login = URLSafeTimedSerializer(secret, salt="cellcommons-portal-login")
        self.secure = secure

    def cookie_options(self, max_age: int) -> dict:
        return {"max_age": max_age, "httponly": True, "samesite": "lax", "secure": self.secure, "path": "/"}

    def load(self, cookie: str | None) -> PortalSession:
        """The session in the cookie; an anonymous one (with a fresh CSRF token) when absent, forged or older than
        a session can be. One whose sign-in has ended is kept as it is (`signed_in` is false), so that the
        person is told their session ended rather than asked to sign in as if they never had."""
        if cookie:
            try:
                return _decode(self._session.loads(cookie, max_age=MAX_SESSION_SECONDS))
            except (BadSignature, KeyError, TypeError, ValueError):
                pass
        return PortalSession(principal=None, csrf=new_csrf_token(), expires_at=0)

    def dump(self, session: PortalSession) -> str:
        return self._session.dumps(_encode(session))

    def ended(self, session: PortalSession) -> str:
        """The cookie of `session` once it has ended: the same person, told their session ended."""
        return self.dump(replace(session, expires_at=0))

    def start_login(self, state: dict) -> str:
        return self._login.dumps(state)

    def finish_login(self, cookie: str | None) -> dict | None:
        if not cookie:
            return None
        try:
            return self._login.loads(cookie, max_age=LOGIN_SECONDS)
        except BadSignature:
            return None


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(session: PortalSession, submitted: str | None) -> bool:
    return bool(submitted) and same_secret(session.csrf, submitted)


def same_secret(expected: str, submitted: str) -> bool:
    """A constant-time comparison of what the browser sent, whatever its characters (compare_digest refuses
    non-ASCII str with a TypeError, which would be a 500 instead of a refusal)."""
    return hmac.compare_digest(expected.encode(), submitted.encode())


def _encode(session: PortalSession) -> dict:
    p = session.principal
    principal = None
    if p is not None:
        principal = {
            "institution_id": str(p.institution_id), "institution_slug": p.institution_slug, "subject": p.subject,
            "roles": sorted(p.roles), "issuer": p.issuer, "orcid": p.orcid,
        }  # fmt: skip
    return {"principal": principal, "csrf": session.csrf, "expires_at": session.expires_at, "sid": session.session_id}


def _decode(data: dict) -> PortalSession:
    raw = data["principal"]
    principal = None
    if raw is not None:
        principal = Principal(
            institution_id=uuid.UUID(raw["institution_id"]),
            institution_slug=raw["institution_slug"],
            subject=raw["subject"],
            roles=frozenset(Role(r) for r in raw["roles"]),
            issuer=raw["issuer"],
            orcid=raw.get("orcid"),  # sessions begun before ORCIDs were kept have none
        )
    # A cookie without a session id (from before sign-out ended sessions on the server) could never be ended: it is
    # refused like a forged one, and its holder signs in again once.
    return PortalSession(
        principal=principal, csrf=data["csrf"], expires_at=float(data["expires_at"]), session_id=str(data["sid"])
    )


# ---- sessions ended on the server ---------------------------------------------------------------------------


class EndedSessions:
    """ASGI middleware: a request whose cookie holds a signed-in session that was signed out reaches the pages as
    an ended session, whichever of them reads the cookie and however often. One lookup (`ended`) per request that
    carries a signed-in session; none for anonymous ones or static files. If the database cannot answer, the
    request is answered by `unavailable` (the outage page), not let through unchecked."""

    def __init__(
        self,
        app: ASGIApp,
        sessions: Sessions,
        ended: Callable[[str], Awaitable[bool]],
        unavailable: Callable[[Request, Unavailable], Awaitable[Response]],
        static_prefix: str = "/static/",
    ):
        self.app, self.sessions, self.ended, self.unavailable = app, sessions, ended, unavailable
        self.static_prefix = static_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "").removeprefix(scope.get("root_path", ""))
        if scope["type"] == "http" and not path.startswith(self.static_prefix):
            request = Request(scope)
            cookie = request.cookies.get(SESSION_COOKIE)
            session = self.sessions.load(cookie)
            if session.signed_in:
                try:
                    ended = await self.ended(session.session_id)
                except OUTAGE_TYPES as exc:
                    outage = unavailable_from(exc)
                    if outage is None:
                        raise
                    await (await self.unavailable(request, outage))(scope, receive, send)
                    return
                if ended:
                    # The pages read the session from the Cookie header: it is rebuilt from the cookies as parsed
                    # here (so no quoting or second header can slip the original past), with the ended session.
                    cookies = {**request.cookies, SESSION_COOKIE: self.sessions.ended(session)}
                    header = "; ".join(f"{name}={value}" for name, value in cookies.items()).encode("latin-1")
                    scope["headers"] = [(n, v) for n, v in scope["headers"] if n != b"cookie"] + [(b"cookie", header)]
        await self.app(scope, receive, send)
