"""Tokens and client assertions whose JSON nests deeper than the parser's recursion limit are malformed: refused
with 401 at /whoami, /graphql and the token endpoint (where the refusal is audited), never a 500."""

from __future__ import annotations

import base64

import httpx
from joserfc.jwk import ECKey
from tests.api.test_oauth import _add, _events, _whoami, served  # noqa: F401  (served is a fixture)

from cellcommons.institutions import clients

DEEP = "[" * 1500 + "]" * 1500  # about 3 KB: within every size limit, past the parser's recursion limit


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


async def test_a_deeply_nested_bearer_token_is_refused_as_malformed(served):  # noqa: F811
    payload = f'{{"iss":"{served.settings.issuer_url}","x":{DEEP}}}'
    token = ".".join(_b64(part) for part in ('{"alg":"ES256","typ":"at+jwt"}', payload, "sig"))
    whoami = await _whoami(served, token)
    assert whoami.status_code == 401 and whoami.json()["error"]["code"] == "invalid_token"
    async with httpx.AsyncClient(timeout=10) as http:
        graphql = await http.post(
            f"{served.base_url}/graphql", json={"query": "{ __typename }"}, headers={"Authorization": f"Bearer {token}"}
        )
    assert graphql.status_code == 401
    rejections = await _events(served, "auth.token_rejected")
    assert [e.details["reason"] for e in rejections[-2:]] == ["malformed token", "malformed token"]


async def test_a_deeply_nested_client_assertion_is_an_audited_invalid_client(served):  # noqa: F811
    added = await _add(served, public_jwk=ECKey.generate_key("P-256").as_dict(private=False))
    client_id = added.client.client_id
    payload = f'{{"iss":"{client_id}","sub":"{client_id}","x":{DEEP}}}'
    assertion = ".".join(_b64(part) for part in ('{"alg":"ES256"}', payload, "sig"))
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(
            served.token_endpoint,
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": clients.ASSERTION_TYPE,
                "client_assertion": assertion,
            },
        )
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
    refusals = await _events(served, "auth.client_token_refused")
    assert refusals[-1].details["reason"] == "malformed assertion"
