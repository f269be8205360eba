"""The GraphQL endpoint's HTTP layer: requests Strawberry cannot use are a 4xx in the platform's JSON error shape
(`{"error": {"code", "message"}}`, as every REST error), never a 500 and never plain text."""

from __future__ import annotations

import httpx
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from tests.graphql.conftest import api, seeded_settings  # noqa: F401  (the seeded in-process API)

from cellcommons.api.app import MAX_JSON_DEPTH, MAX_JSON_VALUES, create_app
from cellcommons.graphql.limits import Limits
from cellcommons.settings import Environment

JSON = {"content-type": "application/json"}


def refused(response, status: int, code: str, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": {"code": code, "message": message}}


@pytest.mark.parametrize("body", [b'"a string"', b"123", b"null", b"true"])
async def test_a_json_body_that_is_not_an_object_is_a_400(api, body):  # noqa: F811
    response = await api.client.post("/graphql", content=body, headers=JSON)
    refused(response, 400, "malformed_request", "the request body must be a JSON object")


async def test_deeply_nested_json_variables_are_a_400(api):  # noqa: F811
    deep = b"[" * 5_000 + b"]" * 5_000  # 10 kB, far under the body limit
    body = b'{"query": "{ viewer { signedIn } }", "variables": {"a": ' + deep + b"}}"
    response = await api.client.post("/graphql", content=body, headers=JSON)
    refused(response, 400, "malformed_request", "the JSON is nested too deeply")


async def test_deeply_nested_variables_in_a_get_are_a_400(api):  # noqa: F811
    params = {"query": "{ viewer { signedIn } }", "variables": '{"a": ' + "[" * 5_000 + "]" * 5_000 + "}"}
    response = await api.client.get("/graphql", params=params)
    refused(response, 400, "malformed_request", "the JSON is nested too deeply")


def nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize("levels", [100, 910])  # about 910: deep enough to exhaust the stack past decoding
async def test_variables_nested_deeper_than_any_input_are_a_400(api, levels):  # noqa: F811
    body = {"query": "{ viewer { signedIn } }", "variables": {"a": nested(levels)}}
    response = await api.client.post("/graphql", json=body)
    refused(response, 400, "malformed_request", f"the JSON nests more than {MAX_JSON_DEPTH} levels deep")


async def test_variables_of_more_values_than_any_input_are_a_400_before_strawberry_converts_them(api):  # noqa: F811
    ors = [{"lotNumber": {"eq": f"LOT-{i}"}} for i in range(MAX_JSON_VALUES // 3 + 1)]  # 3 values each
    query = "query($f: BatchFilter) { batches(filter: $f, first: 1) { totalCount } }"
    response = await api.client.post("/graphql", json={"query": query, "variables": {"f": {"or": ors}}})
    refused(response, 400, "malformed_request", f"the JSON holds more than {MAX_JSON_VALUES} values")
    within = {"query": query, "variables": {"f": {"or": ors[:50]}}}
    assert (await api.client.post("/graphql", json=within)).status_code == 200


async def test_variables_nested_to_the_limit_are_answered(api):  # noqa: F811
    body = {"query": "{ viewer { signedIn } }", "variables": {"a": nested(MAX_JSON_DEPTH - 2)}}  # body, variables
    response = await api.client.post("/graphql", json=body)
    assert response.status_code == 200
    assert response.json()["data"] == {"viewer": {"signedIn": False}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "Unable to parse request body as JSON"),
        (b'{"variables": {}}', "No GraphQL query found in the request"),
        (b'{"query": 5}', "The GraphQL operation's `query` must be a string or null, if provided."),
        (
            b'{"query": "{ viewer { signedIn } }", "variables": []}',
            "The GraphQL operation's `variables` must be an object or null, if provided.",
        ),
        (b'[{"query": "{ viewer { signedIn } }"}]', "Batching is not enabled"),
        (b'{"query": "query A { viewer { signedIn } }", "operationName": "B"}', 'Unknown operation named "B".'),
    ],
    ids=["not JSON", "no query", "query not a string", "variables not an object", "a batch", "unknown operation"],
)
async def test_a_post_strawberry_cannot_read_is_a_json_400(api, body, message):  # noqa: F811
    response = await api.client.post("/graphql", content=body, headers=JSON)
    refused(response, 400, "malformed_request", message)


async def test_a_get_without_a_query_is_a_json_400(api):  # noqa: F811
    response = await api.client.get("/graphql", headers={"accept": "application/json"})  # not asking for GraphiQL
    refused(response, 400, "malformed_request", "No GraphQL query found in the request")


async def test_a_mutation_over_get_is_a_json_405_naming_post(api):  # noqa: F811
    response = await api.client.get("/graphql", params={"query": "mutation { __typename }"})
    refused(response, 405, "method_not_allowed", "mutations are not allowed when using GET")
    assert response.headers["allow"] == "POST"


async def test_a_browser_get_where_graphiql_is_off_is_a_json_404(seeded_settings):  # noqa: F811
    app = create_app(seeded_settings.model_copy(update={"environment": Environment.production}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cellcommons.test") as client:
            response = await client.get("/graphql", headers={"accept": "text/html"})
    refused(response, 404, "not_found", "Not Found")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
async def test_a_body_of_another_content_type_is_a_json_415(api, content_type):  # noqa: F811
    response = await api.client.post(
        "/graphql", content=b'{"query": "{ viewer { signedIn } }"}', headers={"content-type": content_type}
    )
    refused(response, 415, "unsupported_media_type", "the request body must be application/json")


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
