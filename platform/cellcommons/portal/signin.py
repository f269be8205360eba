"""Signing a person in through their institution's issuer: OIDC authorization code with PKCE (S256).

The portal is a public client: no secret, the PKCE verifier proves the code is ours. The ID token proves the
answer is the issuer's to this browser's sign-in (its nonce is the one kept in the login cookie) and names who
signed in; the access token goes through the same validator as every bearer token, so institution and roles
come from the issuer registry, and it must name the same person. Neither token is kept.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx

from cellcommons.auth.principal import Principal
from cellcommons.auth.validator import TokenRejected, TokenValidator
from cellcommons.errors import InvalidInput, Unavailable
from cellcommons.portal.session import same_secret

PORTAL_CLIENT_ID = "cellcommons-portal"


@dataclass(frozen=True)
class LoginStart:
    redirect_to: str
    state: dict  # kept in the signed login cookie until the callback


NO_ANSWER = "your institution's sign-in service does not answer; try again shortly"
NOT_THIS_BROWSER = "the sign-in answer does not belong to this browser; sign in again"


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
        state={"issuer": issuer, "state": state, "nonce": nonce, "verifier": verifier, "redirect_uri": redirect_uri},
    )


async def finish(
    http: httpx.AsyncClient, validator: TokenValidator, pending: dict, code: str, state: str
) -> tuple[Principal, float]:
    """The principal and when its session should end (the access token's expiry)."""
    if not same_secret(pending["state"], state):
        raise InvalidInput(NOT_THIS_BROWSER, field="state")
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
    access_token, id_token, lifetime = _tokens(response)
    signed_in = await verified_id_token(validator, id_token, pending)
    principal = await validator.validate(access_token)
    if (principal.issuer, principal.subject) != (signed_in["iss"], signed_in["sub"]):
        raise InvalidInput(_unverified("its ID token and access token name different people"), field="id_token")
    return principal, lifetime


def _tokens(response: httpx.Response) -> tuple[str, str, float]:
    """The access token, the ID token and the lifetime from a token response; anything else is an issuer not
    answering as OAuth (and OIDC, which requires the ID token) says: a sign-in to retry, not an error of the
    portal's."""
    try:
        tokens = response.json()
        access_token, id_token = tokens["access_token"], tokens["id_token"]
        lifetime = float(tokens.get("expires_in", 300))
    except (ValueError, TypeError, KeyError, AttributeError):
        raise Unavailable(NO_ANSWER) from None
    if not all(isinstance(token, str) and token for token in (access_token, id_token)):
        raise Unavailable(NO_ANSWER)
    return access_token, id_token, lifetime


async def verified_id_token(validator: TokenValidator, id_token: str, pending: dict) -> dict:
    """The ID token's claims, once it is shown to be the answer of the issuer this login went to, for the portal,
    to this very login (OIDC Core §3.1.3.7); else a sign-in to start again."""
    try:
        claims = await _signed_claims(validator, id_token)
    except TokenRejected as exc:
        raise InvalidInput(_unverified(f"ID token: {exc.message}"), field="id_token") from None
    if claims["iss"] != pending["issuer"]:
        raise InvalidInput(_unverified("its ID token comes from another issuer"), field="id_token")
    if not isinstance(claims.get("iat"), int | float) or isinstance(claims["iat"], bool):
        raise InvalidInput(_unverified("its ID token says not when it was issued"), field="id_token")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise InvalidInput(_unverified("its ID token names nobody"), field="id_token")
    # The nonce ties the ID token to the login this browser started: an ID token (and code) obtained for another
    # login, or an authorization request whose nonce was changed on the way, is refused here. A login cookie
    # from before nonces were kept has none: that sign-in is simply started again.
    nonce, expected = claims.get("nonce"), pending.get("nonce")
    if not isinstance(nonce, str) or not isinstance(expected, str) or not same_secret(expected, nonce):
        raise InvalidInput(NOT_THIS_BROWSER, field="nonce")
    return claims


async def _signed_claims(validator: TokenValidator, token: str) -> dict:
    """Claims of the ID token, checked as the validator checks a bearer token (the algorithms and JWKS the registry
    pins for its issuer, the same key cache, exp/nbf/iat) for the portal as its audience. TokenRejected otherwise."""
    claims = await validator.verified_claims(token, PORTAL_CLIENT_ID)
    # A token for several audiences must name the portal as the party it was issued to (OIDC Core 3.1.3.7).
    several = isinstance(claims.get("aud"), list) and len(claims["aud"]) > 1
    if claims.get("azp", None if several else PORTAL_CLIENT_ID) != PORTAL_CLIENT_ID:
        raise TokenRejected("issued to another client")
    return claims


def _unverified(reason: str) -> str:
    return f"your institution's sign-in could not be verified ({reason}); sign in again"
