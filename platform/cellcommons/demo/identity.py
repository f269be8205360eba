"""The demo's sign-in: the dev identity provider's issuers registered for the demo institutions, and a demo
token fetched through the real authorization-code + PKCE flow."""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlparse

import httpx
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.auth.dev_idp import DevIdentityProvider
from cellcommons.auth.dev_idp.provider import PORTAL_CLIENT_ID
from cellcommons.auth.dev_idp.users import ORCID_CLAIM
from cellcommons.errors import InvalidInput, Unavailable
from cellcommons.institutions.models import Issuer
from cellcommons.institutions.service import register_issuer, trusted_issuers

CALLBACK = "http://127.0.0.1/auth/callback"


async def register_dev_issuers(session: AsyncSession, http: httpx.AsyncClient, idp: DevIdentityProvider) -> dict:
    """Trust each dev issuer for its institution (institutions must exist); replaces earlier runs' entries,
    whose loopback ports are gone."""
    await session.execute(delete(Issuer).where(Issuer.issuer_url.like("http://127.0.0.1:%/realms/%")))
    for slug in idp.slugs:
        mapping = idp.role_mapping(slug)
        await register_issuer(
            session,
            http,
            institution_slug=slug,
            issuer_url=idp.issuer(slug),
            audience="cellcommons",
            algorithms=[idp.algorithm(slug)],
            role_claim=mapping.claim_path,
            role_mapping={value: role.value for value, role in mapping.values.items()},
            orcid_claim=ORCID_CLAIM,
        )
    return await trusted_issuers(session)


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


async def fetch_demo_token(http: httpx.AsyncClient, issuer: str, username: str) -> str:
    """Sign `username` in at `issuer` (a dev issuer) and return the access token."""
    verifier, state = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
    try:
        discovery = (await http.get(issuer + "/.well-known/openid-configuration")).raise_for_status().json()
        answer = await http.get(
            discovery["authorization_endpoint"],
            params={
                "response_type": "code", "client_id": PORTAL_CLIENT_ID, "redirect_uri": CALLBACK, "state": state,
                "scope": "openid", "code_challenge": _challenge(verifier), "code_challenge_method": "S256",
                "login_hint": username,
            },
        )  # fmt: skip
    except httpx.HTTPError as exc:
        raise Unavailable(f"the demo identity provider at {issuer} did not answer: {exc}") from None
    query = parse_qs(urlparse(answer.headers.get("location", "")).query)
    if "code" not in query or query.get("state") != [state]:
        raise InvalidInput(f"{issuer} did not sign {username!r} in", field="user")
    tokens = await http.post(
        discovery["token_endpoint"],
        data={
            "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": CALLBACK,
            "client_id": PORTAL_CLIENT_ID, "code_verifier": verifier,
        },
    )  # fmt: skip
    if tokens.status_code != 200:
        raise InvalidInput(f"{issuer} refused the code: {tokens.text[:200]}", field="user")
    return tokens.json()["access_token"]
