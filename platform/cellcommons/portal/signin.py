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


NO_ANSWER = "your institution's sign-in service does not answer; try again shortly"


async def _discovery(http: httpx.AsyncClient, issuer: str) -> dict:
    try:
        response = await http.get(issuer.rstrip("/") + "/.well-known/openid-configuration")
        response.raise_for_status()
        discovery = response.json()
    except (httpx.HTTPError, ValueError):
        raise Unavailable(NO_ANSWER) from None
    if not isinstance(discovery, dict):
        raise Unavailable(NO_ANSWER)
    return discovery


async def _endpoint(http: httpx.AsyncClient, issuer: str, name: str) -> str:
    """An endpoint the issuer's discovery document names; a document without it is an issuer not answering."""
    endpoint = (await _discovery(http, issuer)).get(name)
    if not isinstance(endpoint, str) or not endpoint:
        raise Unavailable(NO_ANSWER)
    return endpoint


async def start(http: httpx.AsyncClient, issuer: str, redirect_uri: str) -> LoginStart:
    authorize = await _endpoint(http, issuer, "authorization_endpoint")
    verifier = secrets.token_urlsafe(48)
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {
        "response_type": "code", "client_id": PORTAL_CLIENT_ID, "redirect_uri": redirect_uri, "scope": "openid",
        "state": state, "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256",
    }  # fmt: skip
    return LoginStart(
        redirect_to=f"{authorize}?{urlencode(query)}",
        state={"issuer": issuer, "state": state, "verifier": verifier, "redirect_uri": redirect_uri},
    )


async def finish(
    http: httpx.AsyncClient, validator: TokenValidator, pending: dict, code: str, state: str
) -> tuple[Principal, float]:
    """The principal and when its session should end (the access token's expiry)."""
    if not same_secret(pending["state"], state):
        raise InvalidInput("the sign-in answer does not belong to this browser; sign in again", field="state")
    token_endpoint = await _endpoint(http, pending["issuer"], "token_endpoint")
    try:
        response = await http.post(
            token_endpoint,
            data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": pending["redirect_uri"],
                "client_id": PORTAL_CLIENT_ID, "code_verifier": pending["verifier"],
            },
        )  # fmt: skip
    except httpx.HTTPError:
        raise Unavailable(NO_ANSWER) from None
    if response.status_code != 200:
        raise InvalidInput("your institution did not confirm the sign-in; sign in again", field="code")
    access_token, lifetime = _tokens(response)
    principal = await validator.validate(access_token)
    return principal, lifetime


def _tokens(response: httpx.Response) -> tuple[str, float]:
    """The access token and its lifetime from a token response; anything else is an issuer not answering as
    OAuth says (a sign-in to retry, not an error of the portal's)."""
    try:
        tokens = response.json()
        access_token, lifetime = tokens["access_token"], float(tokens.get("expires_in", 300))
    except (ValueError, TypeError, KeyError, AttributeError):
        raise Unavailable(NO_ANSWER) from None
    if not isinstance(access_token, str) or not access_token:
        raise Unavailable(NO_ANSWER)
    return access_token, lifetime
