"""Sign-in against an issuer that answers badly: the person is told to try again (503), never a 500."""

from __future__ import annotations

import httpx
import pytest

from cellcommons.errors import InvalidInput, Unavailable
from cellcommons.portal import signin

ISSUER = "https://idp.example.org"
PENDING = {"issuer": ISSUER, "state": "s", "verifier": "v", "redirect_uri": "https://portal.example.org/auth/callback"}


class NoValidation:
    async def validate(self, token: str):
        raise AssertionError("no token should reach the validator")


def issuer(discovery: dict | list, token: httpx.Response | Exception | None = None) -> httpx.AsyncClient:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/openid-configuration"):
            return httpx.Response(200, json=discovery)
        if isinstance(token, Exception):
            raise token
        return token

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


ENDPOINTS = {"authorization_endpoint": f"{ISSUER}/authorize", "token_endpoint": f"{ISSUER}/token"}


@pytest.mark.parametrize(
    "token",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.Response(200, text="<html>maintenance</html>"),
        httpx.Response(200, json={"token_type": "Bearer"}),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(200, json={"access_token": 42, "id_token": "i"}),
        httpx.Response(200, json={"access_token": "t", "id_token": "i", "expires_in": "soon"}),
        httpx.Response(200, json={"access_token": "t", "token_type": "Bearer"}),
        httpx.Response(200, json={"access_token": "t", "id_token": ""}),
    ],
    ids=[
        *("unreachable", "timeout", "not-json", "no-token", "a-list", "token-not-text", "lifetime-not-number"),
        *("no-id-token", "empty-id-token"),
    ],
)
async def test_a_token_endpoint_that_answers_badly_is_an_issuer_to_retry(token):
    async with issuer(ENDPOINTS, token) as http:
        with pytest.raises(Unavailable, match="does not answer"):
            await signin.finish(http, NoValidation(), PENDING, "code", "s")


@pytest.mark.parametrize("discovery", [{"issuer": ISSUER}, [ISSUER]], ids=["no-endpoints", "a-list"])
async def test_a_discovery_document_without_the_endpoints_is_an_issuer_to_retry(discovery):
    async with issuer(discovery) as http:
        with pytest.raises(Unavailable):
            await signin.start(http, ISSUER, PENDING["redirect_uri"])
        with pytest.raises(Unavailable):
            await signin.finish(http, NoValidation(), PENDING, "code", "s")


async def test_a_refused_code_asks_to_sign_in_again():
    async with issuer(ENDPOINTS, httpx.Response(400, json={"error": "invalid_grant"})) as http:
        with pytest.raises(InvalidInput) as refused:
            await signin.finish(http, NoValidation(), PENDING, "code", "s")
    assert refused.value.field == "code"
