"""The GraphQL endpoint's HTTP layer: request bodies Strawberry cannot use are a 400, never a 500."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from tests.graphql.conftest import api, seeded_settings  # noqa: F401  (the seeded in-process API)

from cellcommons.api.app import MAX_JSON_DEPTH, create_app
from cellcommons.graphql.limits import Limits

JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("body", [b'"a string"', b"123", b"null", b"true"])
async def test_a_json_body_that_is_not_an_object_is_a_400(api, body):  # noqa: F811
    response = await api.client.post("/graphql", content=body, headers=JSON)
    assert response.status_code == 400
    assert response.text == "the request body must be a JSON object"


async def test_deeply_nested_json_variables_are_a_400(api):  # noqa: F811
    deep = b"[" * 5_000 + b"]" * 5_000  # 10 kB, far under the body limit
    body = b'{"query": "{ viewer { signedIn } }", "variables": {"a": ' + deep + b"}}"
    response = await api.client.post("/graphql", content=body, headers=JSON)
    assert response.status_code == 400
    assert response.text == "the JSON is nested too deeply"


async def test_deeply_nested_variables_in_a_get_are_a_400(api):  # noqa: F811
    params = {"query": "{ viewer { signedIn } }", "variables": '{"a": ' + "[" * 5_000 + "]" * 5_000 + "}"}
    response = await api.client.get("/graphql", params=params)
    assert response.status_code == 400
    assert response.text == "the JSON is nested too deeply"


def nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize("levels", [100, 910])  # about 910: deep enough to exhaust the stack past decoding
async def test_variables_nested_deeper_than_any_input_are_a_400(api, levels):  # noqa: F811
    body = {"query": "{ viewer { signedIn } }", "variables": {"a": nested(levels)}}
    response = await api.client.post("/graphql", json=body)
    assert response.status_code == 400
    assert response.text == f"the JSON nests more than {MAX_JSON_DEPTH} levels deep"


async def test_variables_nested_to_the_limit_are_answered(api):  # noqa: F811
    body = {"query": "{ viewer { signedIn } }", "variables": {"a": nested(MAX_JSON_DEPTH - 2)}}  # body, variables
    response = await api.client.post("/graphql", json=body)
    assert response.status_code == 200
    assert response.json()["data"] == {"viewer": {"signedIn": False}}


async def test_an_object_body_is_still_answered(api):  # noqa: F811
    response = await api.client.post("/graphql", content=b'{"query": "{ viewer { signedIn } }"}', headers=JSON)
    assert response.status_code == 200
    assert response.json()["data"] == {"viewer": {"signedIn": False}}


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
def test_a_websocket_to_the_endpoint_is_closed_not_an_error(seeded_settings, protocol):  # noqa: F811
    # The schema has no subscriptions. The TestClient re-raises whatever the app raises (it was a TypeError).
    with TestClient(create_app(seeded_settings)) as client, pytest.raises(WebSocketDisconnect):
        with client.websocket_connect("/graphql", subprotocols=[protocol]) as websocket:
            websocket.send_json({"type": "connection_init"})
            websocket.receive_json()


SIGNED_IN = "{ viewer { signedIn } }"


async def test_a_query_text_at_the_length_limit_is_answered(api):  # noqa: F811
    query = SIGNED_IN + " " * (Limits().max_query_chars - len(SIGNED_IN))
    response = await api.client.post("/graphql", json={"query": query})
    assert response.status_code == 200
    assert response.json()["data"] == {"viewer": {"signedIn": False}}


@pytest.mark.parametrize(
    "padding",
    [
        ("#" + "x" * 98 + "\n") * 10_000,  # a megabyte of comments, under the body limit: lexed before, one by one
        "__typename " * 10_000,  # over the token limit too: the length is checked first, without lexing
    ],
    ids=["comments", "tokens"],
)
async def test_a_query_text_over_the_length_limit_is_refused_unread(api, padding):  # noqa: F811
    limit = Limits().max_query_chars
    query = "{ viewer { signedIn " + padding + "} }"
    response = await api.client.post("/graphql", json={"query": query})
    assert response.status_code == 200  # as every refusal of a query's text: a GraphQL error, no data
    body = response.json()
    assert body["data"] is None
    assert body["errors"] == [
        {
            "message": f"the query is {len(query)} characters long; the limit is {limit}",
            "extensions": {"code": "query_too_long", "length": len(query), "limit": limit},
        }
    ]
