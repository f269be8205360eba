"""GraphQL endpoint protection against a small schema of its own (tests/graphql/limits_schema.py), executed with
`schema.execute`: every refusal is checked for its code and for no resolver having run."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
from graphql import parse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from tests.graphql.limits_schema import Context, build_schema

from cellcommons.auth.principal import Principal
from cellcommons.graphql.limits import BodySizeLimit, Budget, Limits
from cellcommons.graphql.limits.config import CACHED_TEXT
from cellcommons.graphql.limits.guard import PriceList
from cellcommons.settings import Environment, Settings

# Only the environment matters here; model_construct skips the production checks of unrelated settings.
TEST = Settings.model_construct(environment=Environment.test)
DEMO = Settings.model_construct(environment=Environment.demo)
PRODUCTION = Settings.model_construct(environment=Environment.production)

ITEMS_WITH_PARTS = "{ items(first: %d) { edges { node { id parts(first: %d) { edges { node { id } } } } } } }"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


async def run(query: str, *, settings=TEST, limits=Limits(), budget=None, context=None, variables=None):  # noqa: B008
    context = context or Context()
    schema = build_schema(settings, limits, budget)
    result = await schema.execute(query, variable_values=variables, context_value=context)
    return result, context


def codes(result) -> list[str]:
    return [(e.extensions or {}).get("code") for e in result.errors or []]


def refused(result, context, code: str) -> None:
    assert code in codes(result), [e.message for e in result.errors or []]
    assert result.data is None
    assert context.calls == []


def nested(field: str, depth: int) -> str:
    """`{ item { child { child … { id } } } }`: `depth` fields on the longest path."""
    return "{ " + f"{field} {{ " + "child { " * (depth - 2) + "id" + " }" * (depth - 1) + " }"


# --- shape: depth, aliases, tokens ---------------------------------------------------------------------------


async def test_depth_at_the_limit_runs_and_one_deeper_is_refused_before_any_resolver():
    result, context = await run(nested("item", 10))
    assert result.errors is None
    assert context.calls == ["item", *["child"] * 8]

    result, context = await run(nested("item", 11))
    refused(result, context, "query_too_deep")
    assert result.errors[0].extensions == {"code": "query_too_deep", "depth": 11, "limit": 10}


async def test_depth_counts_fields_reached_through_fragments():
    query = nested("item", 6).replace("{ id }", "{ ...Deep }", 1) + " fragment Deep on Item { child { child { id } } }"
    assert (await run(query, limits=Limits(max_depth=8)))[0].errors is None
    result, context = await run(query, limits=Limits(max_depth=7))
    refused(result, context, "query_too_deep")


async def test_direct_aliases_over_the_limit_are_refused():
    ok, _ = await run("{ " + " ".join(f"a{i}: item {{ id }}" for i in range(30)) + " }")
    assert ok.errors is None and len(ok.data) == 30

    result, context = await run("{ " + " ".join(f"a{i}: item {{ id }}" for i in range(31)) + " }")
    refused(result, context, "too_many_aliases")
    assert result.errors[0].extensions["aliases"] == 31


async def test_aliases_count_once_per_fragment_spread_and_inside_inline_fragments():
    fragment = "fragment Ten on Item { " + " ".join(f"c{i}: child {{ id }}" for i in range(10)) + " }"
    inline = "... on Query { " + " ".join(f"q{i}: item {{ id }}" for i in range(10)) + " }"
    # 10 (first spread) + 10 (second spread) + 10 (inline fragment) + 1 (`b:`) = 31
    query = "{ item { ...Ten } b: item { ...Ten } " + inline + " } " + fragment
    result, context = await run(query)
    refused(result, context, "too_many_aliases")
    assert result.errors[0].extensions["aliases"] == 31

    ok, context = await run(query.replace("b: item", "item"))  # merges into `item`: 30 aliases
    assert ok.errors is None
    assert "child" in context.calls


async def test_reused_fragments_cannot_expand_into_a_huge_query():
    # Each level spreads the next twice: 2^12 fields from a few hundred characters.
    levels = [f"fragment L{n} on Item {{ child {{ ...L{n + 1} }} c: child {{ ...L{n + 1} }} }}" for n in range(12)]
    query = "{ item { ...L0 } } " + " ".join(levels) + " fragment L12 on Item { id }"
    result, context = await run(query, limits=Limits(max_aliases=10_000, max_depth=20))
    refused(result, context, "query_too_large")
    assert result.errors[0].extensions["fields"] > 2_000


async def test_query_text_over_the_token_limit_is_refused_before_parsing():
    at_limit = "{ " + "id: __typename " * 2 + "}"  # { + 2 × (id : __typename) + } = 8 tokens
    assert (await run(at_limit, limits=Limits(max_tokens=8)))[0].errors is None

    result, context = await run(at_limit, limits=Limits(max_tokens=7))
    refused(result, context, "too_many_tokens")

    result, context = await run("{ items(first: 1) { edges { node { id } } } " + "__typename " * 5_000 + "}")
    refused(result, context, "too_many_tokens")


async def test_query_text_over_the_length_limit_is_refused_before_its_tokens_are_counted():
    query = "{ id: __typename }"
    assert (await run(query, limits=Limits(max_query_chars=len(query))))[0].errors is None

    result, context = await run(query, limits=Limits(max_query_chars=len(query) - 1, max_tokens=1))
    refused(result, context, "query_too_long")
    assert result.errors[0].extensions == {"code": "query_too_long", "length": 18, "limit": 17}
    assert codes(result) == ["query_too_long"]


# --- cost: connection sizes, page sizes, the per-query cap ----------------------------------------------------


async def test_every_connection_must_state_first_or_last_with_its_path():
    result, context = await run("{ items { edges { node { parts { edges { node { id } } } } } } }")
    refused(result, context, "connection_size_required")
    assert [e.extensions["field"] for e in result.errors] == ["items", "items.edges.node.parts"]

    result, context = await run("{ list: items(last: 2) { edges { node { parts { edges { node { id } } } } } } }")
    refused(result, context, "connection_size_required")
    assert [e.extensions["field"] for e in result.errors] == ["list.edges.node.parts"]


async def test_page_size_over_one_hundred_is_refused():
    ok, context = await run(ITEMS_WITH_PARTS % (100, 1))
    assert ok.errors is None and context.calls.count("parts") == 100

    result, context = await run(ITEMS_WITH_PARTS % (1, 101))
    refused(result, context, "page_size_too_large")
    assert result.errors[0].extensions == {
        "code": "page_size_too_large",
        "field": "items.edges.node.parts",
        "size": 101,
        "limit": 100,
    }


async def test_cost_is_page_size_times_children_plus_one_and_reported():
    result, _ = await run(ITEMS_WITH_PARTS % (3, 4))
    assert result.errors is None
    assert result.extensions["cost"]["requested"] == 3 * (4 + 1)


async def test_counts_and_facets_cost_a_page_each_whatever_the_page_size():
    """An aggregate reads every row the connection finds: `first: 0` does not make it free."""
    query = "{ items(first: 0) { totalCount facets { colour size __typename } } }"
    result, _ = await run(query)
    assert result.extensions["cost"]["requested"] == 3 * Limits().aggregate_cost
    aliased = "{ " + " ".join(f"a{i}: items(first: 0) {{ totalCount facets {{ colour }} }}" for i in range(30)) + " }"
    refused(*(await run(aliased, limits=Limits(max_query_cost=5_999))), "query_too_costly")
    result, _ = await run("{ items(first: 2) { totalCount edges { node { id } } } }")
    assert result.extensions["cost"]["requested"] == 2 * (0 + 1) + Limits().aggregate_cost  # the page as before


async def test_cost_cap_is_inclusive_at_the_default_limit():
    # five × items(100) × (parts(99) + 1) = 50 000, plus parts(1) = 1
    items = " ".join(f"a{i}: " + ITEMS_WITH_PARTS[2:-2] % (100, 99) for i in range(5))
    at_cap, context = await run("{ " + items + " }")
    assert at_cap.errors is None
    assert at_cap.extensions["cost"]["requested"] == 50_000
    assert context.calls.count("items") == 5

    over, context = await run("{ " + items + " parts(first: 1) { edges { node { id } } } }")
    refused(over, context, "query_too_costly")
    assert over.errors[0].extensions == {"code": "query_too_costly", "cost": 50_001, "limit": 50_000}


async def test_same_field_twice_without_alias_is_merged_and_costed_once():
    result, _ = await run("{ parts(first: 10) { edges { node { id } } } parts(first: 10) { edges { __typename } } }")
    assert result.errors is None
    assert result.extensions["cost"]["requested"] == 10


async def test_skipped_fields_cost_nothing():
    query = "query($big: Boolean!) { parts(first: 50) @include(if: $big) { edges { node { id } } } item { id } }"
    skipped, context = await run(query, variables={"big": False}, limits=Limits(max_query_cost=10))
    assert skipped.errors is None and context.calls == ["item"]
    included, context = await run(query, variables={"big": True}, limits=Limits(max_query_cost=10))
    refused(included, context, "query_too_costly")


async def test_page_sizes_from_variables_and_their_defaults_are_costed():
    query = (
        "query($n: Int = 7, $m: Int) "
        "{ items(first: $n) { edges { node { parts(last: $m) { edges { node { id } } } } } } }"
    )
    result, _ = await run(query, variables={"m": 2})
    assert result.errors is None
    assert result.extensions["cost"]["requested"] == 7 * (2 + 1)

    result, context = await run(query, variables={"n": 101, "m": 1})
    refused(result, context, "page_size_too_large")

    result, context = await run(query, variables={"n": 5})  # $m null: parts has no size
    refused(result, context, "connection_size_required")

    result, context = await run(query, variables={"n": 100, "m": 100}, limits=Limits(max_query_cost=10_099))
    refused(result, context, "query_too_costly")
    assert result.errors[0].extensions["cost"] == 10_100


async def test_bad_variables_are_refused_before_any_resolver():
    result, context = await run("query($n: Int!) { items(first: $n) { edges { node { id } } } }", variables={})
    assert result.errors and context.calls == []


# --- budget per principal -------------------------------------------------------------------------------------


def principal(subject: str, issuer: str = "https://idp.leiden.example/realms/lumc") -> Principal:
    return Principal(institution_id=uuid.uuid4(), institution_slug="lumc", subject=subject, issuer=issuer)


async def test_budget_is_charged_reported_and_exhausted_before_any_resolver():
    clock = Clock()
    limits = Limits(budget_points=100, budget_window=timedelta(hours=1))
    budget = Budget(limits.budget_points, limits.budget_window, clock=clock)
    alice = principal("alice")

    first, _ = await run(ITEMS_WITH_PARTS % (10, 4), limits=limits, budget=budget, context=Context(principal=alice))
    assert first.extensions["cost"] == {"requested": 50, "remaining": 50, "resetAt": "2027-01-15T09:00:00Z"}

    clock.now += 600
    second, _ = await run(ITEMS_WITH_PARTS % (10, 3), limits=limits, budget=budget, context=Context(principal=alice))
    assert second.extensions["cost"] == {"requested": 40, "remaining": 10, "resetAt": "2027-01-15T09:10:00Z"}

    context = Context(principal=alice)
    third, _ = await run(ITEMS_WITH_PARTS % (3, 3), limits=limits, budget=budget, context=context)
    refused(third, context, "budget_exhausted")
    assert third.errors[0].extensions["remaining"] == 10
    assert third.extensions["cost"] == {"requested": 12, "remaining": 10, "resetAt": "2027-01-15T09:10:00Z"}

    # Someone else, and the same person once the first spend has left the window.
    other, _ = await run(
        ITEMS_WITH_PARTS % (3, 3), limits=limits, budget=budget, context=Context(principal=principal("bob"))
    )
    assert other.errors is None and other.extensions["cost"]["remaining"] == 88
    clock.now += 3_000
    again, context = await run(
        ITEMS_WITH_PARTS % (3, 3), limits=limits, budget=budget, context=Context(principal=alice)
    )
    assert again.errors is None and context.calls
    assert again.extensions["cost"]["remaining"] == 100 - 40 - 12


async def test_a_repeated_query_is_priced_once_and_charged_every_time():
    limits = Limits(budget_points=100)
    budget = Budget(limits.budget_points, limits.budget_window, clock=Clock())
    schema = build_schema(TEST, limits, budget)
    query = "query($n: Int!) { items(first: $n) { edges { node { id } } } }"

    async def ask(n: int):
        context = Context(principal=principal("alice"))
        return await schema.execute(query, variable_values={"n": n}, context_value=context), context

    answers = [await ask(n) for n in (10, 10, 20, 101, 101)]
    costs = [result.extensions["cost"] for result, _ in answers]
    assert [cost["requested"] for cost in costs[:3]] == [10, 10, 20]
    assert [cost["remaining"] for cost in costs] == [90, 80, 60, 60, 60]
    for refusal in answers[3:]:  # a refusal is worked out (and refused) every time
        refused(*refusal, "page_size_too_large")

    prices = PriceList(limits, hide_suggestions=False)
    document = parse(query)
    kept = prices.price(schema._schema, document, query, None, {"n": 10})
    assert prices.price(schema._schema, document, query, None, {"n": 10}) is kept
    assert prices.price(schema._schema, document, query, None, {"n": 11}).cost == 11
    large = {"n": 10, "padding": "x" * CACHED_TEXT}  # what a client sends is kept only up to CACHED_TEXT
    assert prices.price(schema._schema, document, query, None, large) is not prices.price(
        schema._schema, document, query, None, large
    )


async def test_anonymous_callers_are_charged_by_address_and_refused_queries_cost_nothing():
    limits = Limits(budget_points=30)
    budget = Budget(limits.budget_points, limits.budget_window, clock=Clock())
    here, there = Context(client_host="198.51.100.7"), Context(client_host="198.51.100.8")

    spent, _ = await run(ITEMS_WITH_PARTS % (5, 4), limits=limits, budget=budget, context=here)
    assert spent.extensions["cost"]["remaining"] == 5
    invalid, _ = await run("{ items { edges { node { id } } } }", limits=limits, budget=budget, context=here)
    assert invalid.extensions["cost"] == {
        "requested": 0,
        "remaining": 5,
        "resetAt": spent.extensions["cost"]["resetAt"],
    }
    elsewhere, _ = await run(ITEMS_WITH_PARTS % (5, 4), limits=limits, budget=budget, context=there)
    assert elsewhere.errors is None and elsewhere.extensions["cost"]["remaining"] == 5


async def test_every_response_reports_cost_even_when_refused_at_parsing():
    result, _ = await run("{ items(first: ", limits=Limits(budget_points=9))
    assert result.errors
    assert result.extensions["cost"]["requested"] == 0
    assert result.extensions["cost"]["remaining"] == 9


# --- production hardening -------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [TEST, DEMO])
async def test_unexpected_errors_keep_their_message_outside_production(settings):
    result, context = await run("{ boom }", settings=settings)
    assert context.calls == ["boom"]
    assert result.errors[0].message == "connection to 10.0.0.7:5432 refused"
    assert result.errors[0].extensions == {"code": "internal"}


async def test_unexpected_errors_are_masked_in_production():
    result, context = await run("{ boom }", settings=PRODUCTION)
    assert context.calls == ["boom"]
    assert result.errors[0].formatted == {
        "message": "internal error",
        "locations": [{"line": 1, "column": 3}],
        "path": ["boom"],
        "extensions": {"code": "internal"},
    }
    assert result.errors[0].original_error is None


@pytest.mark.parametrize("settings", [PRODUCTION, DEMO])
async def test_domain_errors_keep_their_message_and_code_everywhere(settings):
    result, _ = await run("{ missing }", settings=settings)
    assert result.errors[0].message == "no such dataset"
    assert result.errors[0].extensions == {"code": "not_found", "field": "id"}


@pytest.mark.parametrize(("settings", "allowed"), [(PRODUCTION, False), (DEMO, True), (TEST, True)])
async def test_introspection_only_outside_production(settings, allowed):
    result, _ = await run("{ __schema { queryType { name } } }", settings=settings)
    if allowed:
        assert result.errors is None and result.data["__schema"]["queryType"]["name"] == "Query"
    else:
        assert result.data is None
        assert "introspection has been disabled" in result.errors[0].message


async def test_field_suggestions_only_outside_production():
    query = "query($n: Int!) { itms(first: $n) { edges { node { id } } } }"
    shown, _ = await run(query, settings=DEMO, variables={"n": 1})
    assert "Did you mean 'items'" in shown.errors[0].message
    hidden, context = await run(query, settings=PRODUCTION, variables={"n": 1})
    assert hidden.errors[0].message == "Cannot query field 'itms' on type 'Query'."
    assert context.calls == []


async def test_production_still_applies_the_limits_when_it_validates_itself():
    result, context = await run(nested("item", 11), settings=PRODUCTION)
    refused(result, context, "query_too_deep")
    result, context = await run("{ item(x: 1) { id } }", settings=PRODUCTION)  # the specified rules still run
    assert result.errors[0].message == "Unknown argument 'x' on field 'Query.item'."
    assert context.calls == []


async def test_a_repeated_query_is_refused_every_time_from_its_cached_parse_and_validation():
    """Parsing and validation run once per distinct text; every request still gets the verdict."""
    for settings in (PRODUCTION, PRODUCTION, TEST, TEST):
        result, context = await run("{ item(x: 1) { id } }", settings=settings)
        assert [e.message for e in result.errors] == ["Unknown argument 'x' on field 'Query.item'."]
        assert context.calls == []
        result, context = await run(nested("item", 11), settings=settings)
        refused(result, context, "query_too_deep")
    result, context = await run(nested("item", 10), settings=PRODUCTION)
    assert result.errors is None and context.calls


# --- request body size ----------------------------------------------------------------------------------------


@pytest.fixture(params=["wrapping the app", "as Starlette middleware"])
def guarded(request):
    """The middleware outside a Starlette app, and inside it (after its ServerErrorMiddleware), as FastAPI mounts it."""
    received: list[int] = []

    async def echo(request: Request) -> JSONResponse:
        received.append(len(await request.body()))
        return JSONResponse({"bytes": received[-1]})

    routes = [Route("/graphql", echo, methods=["POST"]), Route("/upload", echo, methods=["POST"])]
    if request.param == "wrapping the app":
        app = BodySizeLimit(Starlette(routes=routes), max_bytes=100, paths=("/graphql",))
    else:
        app = Starlette(routes=routes, middleware=[Middleware(BodySizeLimit, max_bytes=100, paths=("/graphql",))])
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cellcommons.test")
    return client, received


async def test_body_at_the_limit_passes(guarded):
    client, received = guarded
    response = await client.post("/graphql", content=b"x" * 100)
    assert response.status_code == 200 and received == [100]


async def test_declared_body_over_the_limit_is_refused_unread(guarded):
    client, received = guarded
    response = await client.post("/graphql", content=b"x" * 101)
    assert response.status_code == 413
    assert response.json() == {
        "errors": [
            {"message": "the request body is over 100 bytes", "extensions": {"code": "request_too_large", "limit": 100}}
        ]
    }
    assert received == []


async def test_streamed_body_over_the_limit_is_refused(guarded):
    client, received = guarded

    async def chunks():
        for _ in range(5):
            yield b"x" * 30

    response = await client.post("/graphql", content=chunks())  # no Content-Length: chunked
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "request_too_large"
    assert received == []


async def test_other_paths_are_not_limited(guarded):
    client, received = guarded
    response = await client.post("/upload", content=b"x" * 1_000)
    assert response.status_code == 200 and received == [1_000]
