"""Signing a person in through their institution's issuer: OIDC authorization code with PKCE (S256).

The portal is a public client: no secret, the PKCE verifier proves the code is ours. The access token that
comes back goes through the same validator as every bearer token, so institution and roles come from the
issuer registry; it is not kept.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx

from cellcommons.auth.principal import Principal
from cellcommons.auth.validator import TokenValidator
from cellcommons.errors import InvalidInput, Unavailable
from cellcommons.portal.session import same_secret

PORTAL_CLIENT_ID = "cellcommons-portal"


@dataclass(frozen=True)
class LoginStart:
    redirect_to: str
    state: dict  # kept in the signed login cookie until the callback


async def _discovery(http: httpx.AsyncClient, issuer: str) -> dict:
    try:
        response = await http.get(issuer.rstrip("/") + "/.well-known/openid-configuration")
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError):
        raise Unavailable("your institution's sign-in service does not answer; try again shortly") from None


async def start(http: httpx.AsyncClient, issuer: str, redirect_uri: str) -> LoginStart:
    discovery = await _discovery(http, issuer)
    verifier = secrets.token_urlsafe(48)
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {
        "response_type": "code", "client_id": PORTAL_CLIENT_ID, "redirect_uri": redirect_uri, "scope": "openid",
        "state": state, "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256",
    }  # fmt: skip
    return LoginStart(
        redirect_to=f"{discovery['authorization_endpoint']}?{urlencode(query)}",
        state={"issuer": issuer, "state": state, "verifier": verifier, "redirect_uri": redirect_uri},
    )


async def finish(
    http: httpx.AsyncClient, validator: TokenValidator, pending: dict, code: str, state: str
) -> tuple[Principal, float]:
    """The principal and when its session should end (the access token's expiry)."""
    if not same_secret(pending["state"], state):
        raise InvalidInput("the sign-in answer does not belong to this browser; sign in again", field="state")
    discovery = await _discovery(http, pending["issuer"])
    response = await http.post(
        discovery["token_endpoint"],
        data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": pending["redirect_uri"],
            "client_id": PORTAL_CLIENT_ID, "code_verifier": pending["verifier"],
        },
    )  # fmt: skip
    if response.status_code != 200:
        raise InvalidInput("your institution did not confirm the sign-in; sign in again", field="code")
    tokens = response.json()
    principal = await validator.validate(tokens["access_token"])
    return principal, float(tokens.get("expires_in", 300))
