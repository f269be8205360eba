"""From an Authorization header to a Principal, auditing sign-ins and rejected tokens (never the token)."""

from __future__ import annotations

import base64
import json
from collections import OrderedDict

from cellcommons.audit.service import append
from cellcommons.auth.principal import Principal
from cellcommons.auth.validator import TokenRejected, TokenValidator
from cellcommons.db import Database
from cellcommons.observability import logs, metrics

SEEN_TOKENS = 10_000


class Authenticator:
    def __init__(self, database: Database, validator: TokenValidator):
        self._database = database
        self._validator = validator
        # A bearer token is sent with every request; its first use is the sign-in worth recording.
        self._seen: OrderedDict[str, None] = OrderedDict()

    async def principal(self, authorization: str | None) -> Principal | None:
        """None for an anonymous request; TokenRejected (401) for a bad credential."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            await self._audit_rejection("expected a bearer token", None)
            raise TokenRejected("expected a bearer token")
        try:
            principal = await self._validator.validate(token.strip())
        except TokenRejected as exc:
            await self._audit_rejection(exc.message, _unverified_issuer(token.strip()))
            raise
        await self._audit_first_use(principal)
        logs.note_institution(principal.institution_slug)
        return principal

    async def _audit_rejection(self, reason: str, issuer: str | None) -> None:
        metrics.token_rejected(reason)
        details = {"reason": reason} | ({"claimed_issuer": issuer[:200]} if issuer else {})
        async with self._database.unit_of_work() as session:
            await append(session, actor="system:token-validator", action="auth.token_rejected", outcome="denied",
                         details=details)  # fmt: skip

    async def _audit_first_use(self, principal: Principal) -> None:
        key = f"{principal.issuer}|{principal.token_id or principal.subject}"
        if key in self._seen:
            self._seen.move_to_end(key)
            return
        self._seen[key] = None
        if len(self._seen) > SEEN_TOKENS:
            self._seen.popitem(last=False)
        async with self._database.unit_of_work() as session:
            await append(
                session,
                actor=principal.actor,
                action="auth.sign_in",
                institution=principal.institution_slug,
                details={"issuer": principal.issuer, "roles": sorted(principal.roles)},
            )


def _unverified_issuer(token: str) -> str | None:
    """The `iss` a rejected token claims, for the audit trail; it proves nothing."""
    try:
        segment = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (IndexError, ValueError, RecursionError):  # RecursionError: JSON nested too deeply to parse
        return None
    iss = claims.get("iss") if isinstance(claims, dict) else None
    return iss if isinstance(iss, str) else None
