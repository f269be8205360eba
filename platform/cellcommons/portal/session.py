"""The portal's session: a signed, HttpOnly, SameSite cookie holding who signed in, and CSRF tokens.

The cookie carries no token: after sign-in the platform keeps only the verified principal (institution and
roles from the issuer registry) and when the session ends.
"""

from __future__ import annotations

import hmac
import secrets
import time
import uuid
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

from cellcommons.auth.principal import Principal, Role

SESSION_COOKIE = "cc_session"
LOGIN_COOKIE = "cc_login"
MAX_SESSION_SECONDS = 8 * 3600
LOGIN_SECONDS = 600


@dataclass(frozen=True)
class PortalSession:
    principal: Principal | None
    csrf: str
    expires_at: float

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
            "roles": sorted(p.roles), "issuer": p.issuer,
        }  # fmt: skip
    return {"principal": principal, "csrf": session.csrf, "expires_at": session.expires_at}


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
        )
    return PortalSession(principal=principal, csrf=data["csrf"], expires_at=float(data["expires_at"]))
