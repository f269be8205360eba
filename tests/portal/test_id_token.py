"""The portal as an OpenID Connect relying party: the ID token must be the issuer's answer to this very login.

Tokens come from the real dev identity provider; the validator fetches its keys over HTTP from the JWKS URI the
registry pins. The flow tests run the sign-in as a browser does, against the in-process portal and the dev
issuer's authorization and token endpoints.
"""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from tests.auth.conftest import register_demo_issuers
from tests.graphql.conftest import api, seeded_settings  # noqa: F401  (the in-process app on its own database)

from cellcommons.auth.validator import TokenValidator
from cellcommons.errors import InvalidInput
from cellcommons.portal import signin
from cellcommons.portal.session import LOGIN_COOKIE, SESSION_COOKIE, Sessions

SLUG, OTHER = "leiden-scgt", "lowlands-regmed"  # both sign with RS256
NONCE = "the-nonce-this-login-sent"
PORTAL = "http://127.0.0.1:8000"  # a loopback origin the dev issuer accepts as the portal's redirect URI


@pytest.fixture
async def validator(session, dev_idp):
    async with httpx.AsyncClient(timeout=5) as http:
        trusted = await register_demo_issuers(session, http, dev_idp)

        async def lookup(issuer_url):
            return trusted.get(issuer_url)

        yield TokenValidator(lookup, http)


def pending(idp, **changes) -> dict:
    """What the login cookie keeps for a sign-in started at SLUG's issuer."""
    return {"issuer": idp.issuer(SLUG), "state": "s", "nonce": NONCE, "verifier": "v", "redirect_uri": "/"} | changes


async def test_an_id_token_for_this_login_names_who_signed_in(validator, dev_idp):
    token = dev_idp.issue_id_token(SLUG, "alice", nonce=NONCE)
    claims = await signin.verified_id_token(validator, token, pending(dev_idp))
    assert claims["sub"] == dev_idp.subject(SLUG, "alice") and claims["iss"] == dev_idp.issuer(SLUG)


FORGED = {
    "another login's": (lambda idp: idp.issue_id_token(SLUG, "alice", nonce="the-nonce-of-another-login"), "nonce"),
    "no nonce": (lambda idp: idp.issue_id_token(SLUG, "alice"), "nonce"),
    "another client's": (lambda idp: idp.issue_id_token(SLUG, "alice", "other-app", nonce=NONCE), "wrong audience"),
    "expired": (lambda idp: idp.issue_id_token(SLUG, "alice", nonce=NONCE, lifetime=-3600), "token expired"),
    "no iat": (lambda idp: idp.issue_id_token(SLUG, "alice", nonce=NONCE, iat=None), "not when it was issued"),
    "no sub": (lambda idp: idp.issue_id_token(SLUG, "alice", nonce=NONCE, sub=None), "names nobody"),
    "an access token": (lambda idp: idp.issue_access_token(SLUG, "alice", nonce=NONCE), "wrong audience"),
    "azp another client": (
        lambda idp: idp.issue_id_token(SLUG, "alice", nonce=NONCE, aud=["cellcommons-portal", "x"], azp="x"),
        "another client",
    ),
    "several audiences, no azp": (
        lambda idp: idp.issue_id_token(SLUG, "alice", nonce=NONCE, aud=["cellcommons-portal", "x"], azp=None),
        "another client",
    ),
    "another issuer's": (lambda idp: idp.issue_id_token(OTHER, "alice", nonce=NONCE), "another issuer"),
    "signed by another issuer's key": (
        lambda idp: idp.sign(
            SLUG,
            idp.header(SLUG, "JWT"),
            {**idp.access_token_claims(SLUG, "alice"), "aud": "cellcommons-portal", "nonce": NONCE},
            key=idp.private_key(OTHER),
        ),
        "bad signature",
    ),
    "unsigned": (
        lambda idp: idp.issue_id_token(SLUG, "alice", nonce=NONCE).rsplit(".", 1)[0] + ".",
        "bad signature",
    ),
}


@pytest.mark.parametrize("forge", FORGED.values(), ids=FORGED.keys())
async def test_an_id_token_not_answering_this_login_is_refused_asking_to_sign_in_again(validator, dev_idp, forge):
    make, reason = forge
    with pytest.raises(InvalidInput) as refused:
        await signin.verified_id_token(validator, make(dev_idp), pending(dev_idp))
    assert reason in refused.value.message or reason == refused.value.field
    assert "sign in again" in refused.value.message


async def test_a_login_cookie_from_before_nonces_were_kept_starts_the_sign_in_again(validator, dev_idp):
    token = dev_idp.issue_id_token(SLUG, "alice", nonce=NONCE)
    kept = pending(dev_idp)
    del kept["nonce"]
    with pytest.raises(InvalidInput, match="does not belong to this browser") as refused:
        await signin.verified_id_token(validator, token, kept)
    assert refused.value.field == "nonce"


# ---- through the portal, as a browser signs in --------------------------------------------------------------


async def started(client: httpx.AsyncClient, slug: str = SLUG) -> tuple[str, str]:
    """A sign-in started from the sign-in page's form: (the issuer's authorization URL, the browser's cookies)."""
    client.cookies.clear()
    page = await client.get(f"{PORTAL}/sign-in")
    cookie = f"{SESSION_COOKIE}={page.cookies[SESSION_COOKIE]}"
    hidden = {
        name: html.unescape(value)
        for name, value in re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', page.text)
    }
    start = await client.post(f"{PORTAL}/sign-in", data={**hidden, "institution": slug}, headers={"Cookie": cookie})
    assert start.status_code == 303, start.text
    client.cookies.clear()
    return start.headers["location"], f"{cookie}; {LOGIN_COOKIE}={start.cookies[LOGIN_COOKIE]}"


async def answered(client: httpx.AsyncClient, authorize: str, cookie: str) -> httpx.Response:
    """The person signs in as alice at the issuer; the browser brings the issuer's answer back to the portal."""
    async with httpx.AsyncClient() as browser:
        issued = await browser.get(f"{authorize}&login_hint=alice")
    assert issued.status_code == 302, issued.text
    answer = await client.get(issued.headers["location"], headers={"Cookie": cookie})
    client.cookies.clear()
    return answer


def with_nonce(authorize: str, nonce: str) -> str:
    parts = urlsplit(authorize)
    query = [(k, nonce if k == "nonce" else v) for k, v in parse_qsl(parts.query)]
    return parts._replace(query=urlencode(query)).geturl()


async def test_signing_in_checks_the_id_token_and_keeps_who_it_names(api):  # noqa: F811
    authorize, cookie = await started(api.client)
    answer = await answered(api.client, authorize, cookie)
    assert answer.status_code == 303 and answer.headers["location"] == "/search"
    session = Sessions(api.settings.secret_key.get_secret_value(), secure=False).load(answer.cookies[SESSION_COOKIE])
    assert session.signed_in and session.principal.subject == api.idp.subject(SLUG, "alice")


async def test_an_answer_carrying_another_logins_nonce_does_not_sign_in(api):  # noqa: F811
    """The code is this login's (its state and PKCE verifier match), but the authorization request reached the
    issuer with the nonce of another login: the ID token the issuer signs carries that one, and is refused."""
    other, _ = await started(api.client)
    authorize, cookie = await started(api.client)
    (other_nonce,) = [v for k, v in parse_qsl(urlsplit(other).query) if k == "nonce"]
    answer = await answered(api.client, with_nonce(authorize, other_nonce), cookie)
    assert answer.status_code == 422 and answer.headers["content-type"].startswith("text/html")
    assert "The sign-in answer does not belong to this browser; sign in again" in answer.text
    assert (
        not Sessions(api.settings.secret_key.get_secret_value(), secure=False)
        .load(answer.cookies.get(SESSION_COOKIE))
        .signed_in
    )
