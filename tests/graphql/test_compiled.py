"""A page of datasets answered by one statement (`graphql.compiled`) answers exactly what the field-by-field
execution answers — values, order, page flags, cursors — for every kind of caller, and asks the database once;
what it does not compile runs as before."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import DateTime, Numeric, Text, cast, event, literal, select, text
from tests.graphql.answers import leaves, opened

from cellcommons.auth.principal import Principal, Role
from cellcommons.catalogue import json_pages, search
from cellcommons.catalogue.models import Institution
from cellcommons.db import Database
from cellcommons.graphql import compiled
from cellcommons.graphql.context import Context
from cellcommons.graphql.ids import Identifiers
from cellcommons.graphql.limits import protection
from cellcommons.graphql.schema import build_schema

BATCH = """lotNumber productName cellType tissue manufacturedOn passage populationDoublings cultureSupplement
  concentration1e6PerMl volumeMl dmsoPercent storageTemperatureC expiresOn releaseStatus releasedOn
  clinicalTrialIds route maxInfusionMlPerKgH claimsIsct harvested __typename"""
QC = "testType analyte method timepoint status value unit qualitative passed testedOn __typename"
VERSION = """version status publishedAt title description dataTypes cellType tissue donorCount personalDataLevel
  accessRights standards licence keywords claimsIsct __typename"""
EVERYTHING = f"""query($first: Int!, $batches: Int!, $after: String, $order: DatasetOrder, $search: String) {{
  datasets(first: $first, after: $after, orderBy: $order, search: $search) {{ __typename
    pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor __typename }}
    edges {{ cursor __typename node {{ accession doi harvested __typename latestVersion {{ {VERSION}
      batches(first: $batches) {{ __typename pageInfo {{ hasNextPage hasPreviousPage }}
        nodes {{ {BATCH} qcResults {{ {QC} }} }} edges {{ node {{ lotNumber }} }} }} }} }} }}
    nodes {{ accession }}
  }} }}"""
# The benchmark's page, with aliases, a fragment and an inline fragment.
SHAPED = """query($first: Int!) {
  found: datasets(first: $first, search: "MSC", filter: {tissue: {eq: "UBERON:0002371"}}) {
    nodes { ...Named latestVersion { ... on DatasetVersion { name: title }
      lots: batches(first: 2) { nodes { lot: lotNumber releaseStatus qcResults { testType value unit passed } } }
      few: batches(first: 0) { pageInfo { hasNextPage } nodes { lotNumber } } } } } }
fragment Named on Dataset { accession }"""
# Each asks for something the statement does not build: the field runs as before.
NOT_COMPILED = {
    "a count": "{ datasets(first: 3) { totalCount nodes { accession } } }",
    "a global id": "{ datasets(first: 3) { nodes { id accession } } }",
    "a float": "{ datasets(first: 3) { nodes { latestVersion { batches(first: 2) { nodes { totalCells } } } } } }",
    "a resolver": "{ datasets(first: 3) { nodes { institution { slug } } } }",
    "a nested cursor": "{ datasets(first: 3) { nodes { latestVersion { batches(first: 2) { edges { cursor } } } } } }",
    "a snippet": '{ datasets(first: 3, search: "MSC") { edges { highlight rank node { accession } } } }',
    "a directive": "{ datasets(first: 3) { nodes { accession doi @include(if: false) } } }",
    "facets": "{ datasets(first: 3) { facets { tissue { value count } } nodes { accession } } }",
    "paging back": "{ datasets(last: 3) { nodes { accession } } }",
    "a nested page from the end": "{ datasets(first: 3) { nodes { latestVersion { batches(last: 2) { nodes { "
    "lotNumber } } } } } }",
}
ORDERS = [
    None,
    {"field": "TITLE", "direction": "DESC"},
    {"field": "DONOR_COUNT"},  # nullable: the NULLs come last, and a cursor may hold one
    {"field": "PUBLISHED_AT", "direction": "DESC"},
]


class Callers:
    """Both executions of the API's schema in one transaction (rolled back), statements counted."""

    def __init__(self, settings, session, statements: list):
        self.settings, self.session, self.statements = settings, session, statements
        self.ids = Identifiers(settings.secret_key.get_secret_value())
        # The compiled side as the endpoint serves it: parsed documents (and so field nodes) kept per text.
        self.schemas = {"compiled": build_schema(protection(settings)), "reference": build_schema(fast_paths=False)}

    async def principal(self, slug: str, *roles: Role) -> Principal:
        institution = await self.session.scalar(select(Institution).where(Institution.slug == slug))
        return Principal(institution.id, institution.slug, "alice", frozenset(roles or {Role.reader}))

    async def ask(self, which: str, principal, query: str, variables: dict, operation: str | None = None):
        """The answer and its statements (the compiled one as `json_pages.MARK`, others by their first word)."""
        context = Context(principal=principal, session=self.session, settings=self.settings, ids=self.ids)
        before = len(self.statements)
        result = await self.schemas[which].execute(
            query, variable_values=variables, context_value=context, operation_name=operation
        )
        assert not result.errors, result.errors
        ran = self.statements[before:]
        return result.data, [json_pages.MARK if json_pages.MARK in sql else sql.split()[0] for sql in ran]

    async def both(self, principal, query: str, variables: dict | None = None, operation: str | None = None):
        """The compiled answer (raw, cursors sealed) and its statements, after checking it against the reference."""
        ours, statements = await self.ask("compiled", principal, query, variables or {}, operation)
        reference, _ = await self.ask("reference", principal, query, variables or {}, operation)
        assert opened(ours, self.ids) == opened(reference, self.ids)
        return ours, statements


@pytest.fixture
async def callers(seeded_settings):
    database = Database(seeded_settings)
    statements: list[str] = []

    def count(connection, cursor, statement, *args):
        statements.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", count)
    try:
        async with database.sessions() as session:
            yield Callers(seeded_settings, session, statements)
            await session.rollback()
    finally:
        await database.dispose()


CALLERS = {
    "a reader of the custodian": ("leiden-scgt", Role.reader),
    "a steward elsewhere": ("maple-ccrm", Role.steward),
    "anonymous": None,
}


@pytest.mark.parametrize("caller", CALLERS)
async def test_every_compiled_field_answers_as_the_field_by_field_execution(callers, caller):
    principal = await callers.principal(*CALLERS[caller]) if CALLERS[caller] else None
    answer, statements = await callers.both(principal, EVERYTHING, {"first": 30, "batches": 3})
    assert statements == [json_pages.MARK]
    if principal is None:  # what anonymous callers may see, exactly as the reference answers it
        return
    assert leaves(answer) > 200  # so that equality above means something
    versions = [edge["node"]["latestVersion"] for edge in answer["datasets"]["edges"]]
    assert any(v["batches"]["nodes"] and v["batches"]["nodes"][0]["qcResults"] for v in versions)


MOMENTS = [
    dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.UTC),  # on the second: no fraction
    dt.datetime(2026, 3, 1, 9, 30, 0, 500_000, tzinfo=dt.UTC),  # Python keeps six digits, trailing zeros too
    dt.datetime(2026, 12, 31, 23, 59, 59, 7, tzinfo=dt.UTC),
    dt.datetime(1999, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
]
DECIMALS = ["0.000000", "0.000001", "95.500000", "-12.000100", "123456789012.000000"]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Amsterdam", "America/St_Johns"])
async def test_timestamps_and_decimals_render_as_the_api_serialises_them(callers, zone):
    """The statement's renderings against Strawberry's serialisers of the values psycopg reads, in the session's
    time zone (both follow it)."""
    await callers.session.execute(text(f"SET LOCAL TIME ZONE '{zone}'"))
    for moment in MOMENTS:
        column = literal(moment, DateTime(timezone=True))
        rendered, read = (await callers.session.execute(select(json_pages.isoformat(column), column))).one()
        assert rendered == read.isoformat()
    for digits in DECIMALS:
        column = cast(literal(digits), Numeric(18, 6))
        rendered, read = (await callers.session.execute(select(cast(column, Text), column))).one()
        assert rendered == str(read)


FILTERED = """query($filter: DatasetFilter) { datasets(first: 10, filter: $filter) {
  nodes { accession latestVersion { accessRights dataTypes keywords } } } }"""
# Found in review: a list of values reached the compiled statement as SQLAlchemy's unexpanded placeholder (an
# error on every `in`); the generic ARRAY had no `overlap`/`contains` on either execution. Each kind of list.
LISTS = {
    "strings": {"accession": {"in": ["CCD-LEID-000000", "CCD-MAPL-000001", "CCD-NONE-000000"]}},
    "ints": {"donorCount": {"in": [1, 2, 3]}},
    "enums": {"accessRights": {"in": ["restricted", "non_public"]}},
    "through a relation": {"institution": {"in": ["leiden-scgt", "stromal-bio", "nowhere"]}},
    "an ontology subtree": {"cellType": {"under": "CL:0002569"}},
    "nested with others": {"or": [{"accession": {"in": ["CCD-LOWL-000000"]}}, {"donorCount": {"in": [1]}}],
                           "accessRights": {"in": ["public", "restricted"]}},
    "anyOf data types": {"dataTypes": {"anyOf": ["imaging", "proteomics", "none such"]}},
    "allOf data types": {"dataTypes": {"allOf": ["imaging"]}},
    "anyOf keywords": {"keywords": {"anyOf": ["BM-MSC", "WJ-MSC"]}},
    "allOf keywords": {"keywords": {"allOf": ["BM-MSC", "imaging"]}},
    "anyOf standards": {"standards": {"anyOf": ["MIACARM", "MINSEQE"]}},
    "allOf standards": {"standards": {"allOf": ["MIACARM", "MIFlowCyt"]}},
    "anyOf a batch's trial ids": {"batches": {"clinicalTrialIds": {"anyOf": ["NCT00000000"]}}},
    "allOf a batch's trial ids": {"batches": {"clinicalTrialIds": {"allOf": ["NCT00000000"]}}},
}  # fmt: skip


@pytest.mark.parametrize("caller", ["a reader of the custodian", "anonymous"])
@pytest.mark.parametrize("asked", LISTS)
async def test_filters_on_lists_of_values_answer_as_the_field_by_field_execution(callers, caller, asked):
    principal = await callers.principal(*CALLERS[caller]) if CALLERS[caller] else None
    answer, statements = await callers.both(principal, FILTERED, {"filter": LISTS[asked]})
    assert statements == [json_pages.MARK]
    found = answer["datasets"]["nodes"]
    if principal is not None and "trial ids" not in asked:  # the seeded catalogue has no trial ids
        assert 0 < len(found) < 8  # so that equality means something: the filter kept some, not all


@pytest.mark.parametrize("order", ORDERS)
async def test_paging_on_with_a_cursor_answers_the_same_page(callers, order):
    principal = await callers.principal("lowlands-regmed", Role.reader)
    variables = {"first": 4, "batches": 2, "order": order}
    seen = []
    for _ in range(4):  # a cursor's values (NULLs included) are parameters of the same statement
        answer, statements = await callers.both(principal, EVERYTHING, variables)
        assert statements == [json_pages.MARK]
        page = answer["datasets"]
        seen += [node["accession"] for node in page["nodes"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        variables = {**variables, "after": page["pageInfo"]["endCursor"]}
    assert len(seen) == len(set(seen)) > 4


async def test_a_search_by_relevance_pages_the_same(callers):
    principal = await callers.principal("leiden-scgt", Role.reader)
    variables = {"first": 3, "batches": 1, "search": "MSC", "order": {"field": "RELEVANCE"}}
    first, _ = await callers.both(principal, EVERYTHING, variables)
    after = first["datasets"]["pageInfo"]["endCursor"]
    second, statements = await callers.both(principal, EVERYTHING, {**variables, "after": after})
    assert statements == [json_pages.MARK] and second["datasets"]["nodes"]


async def test_aliases_and_fragments_are_compiled(callers):
    principal = await callers.principal("maple-ccrm", Role.reader)
    answer, statements = await callers.both(principal, SHAPED, {"first": 20})
    assert statements == [json_pages.MARK]
    nodes = answer["found"]["nodes"]
    assert nodes and all(len(n["latestVersion"]["lots"]["nodes"]) <= 2 for n in nodes)
    assert all(n["latestVersion"]["few"]["nodes"] == [] for n in nodes)


@pytest.mark.parametrize("asked", NOT_COMPILED)
async def test_what_is_not_compiled_runs_field_by_field(callers, asked):
    principal = await callers.principal("leiden-scgt", Role.reader)
    answer, statements = await callers.both(principal, NOT_COMPILED[asked])
    assert statements and json_pages.MARK not in statements
    assert leaves(answer) > 0


async def test_a_plan_is_kept_per_document_and_its_page_sizes_read_per_request(callers):
    """The same text with other variables: the kept plan reads each request's sizes (and a null cursor)."""
    principal = await callers.principal("leiden-scgt", Role.reader)
    query = """query($n: Int!, $from: String) { datasets(first: 10) { nodes { accession
      latestVersion { batches(first: $n, after: $from) { pageInfo { hasNextPage } nodes { lotNumber } } } } } }"""
    sizes = []
    for n in (1, 3, 0):
        answer, statements = await callers.both(principal, query, {"n": n, "from": None})
        assert statements == [json_pages.MARK]
        sizes.append(max(len(node["latestVersion"]["batches"]["nodes"]) for node in answer["datasets"]["nodes"]))
    assert sizes[0] == 1 and sizes[1] >= 1 and sizes[2] == 0


async def test_a_cursor_of_another_ordering_is_refused_as_before(callers):
    principal = await callers.principal("leiden-scgt", Role.reader)
    page, _ = await callers.both(principal, EVERYTHING, {"first": 2, "batches": 1})
    cursor = page["datasets"]["pageInfo"]["endCursor"]
    variables = {"first": 2, "batches": 1, "after": cursor, "order": {"field": "TITLE"}}
    refusals = []
    for schema in callers.schemas.values():
        context = Context(principal=principal, session=callers.session, settings=callers.settings, ids=callers.ids)
        result = await schema.execute(EVERYTHING, variable_values=variables, context_value=context)
        refusals.append([(error.message, error.path) for error in result.errors])
    assert refusals[0] == refusals[1]
    assert "another ordering" in refusals[0][0][0]


# Found in review: a cursor sealed only its ordering's name (`created_at`, `created_at:asc`), which collections
# share, so one collection's cursor started another's page. Each connection with the cursor of another.
PAGES = {
    "datasets": "query($after: String) { datasets(first: 2, after: $after) { edges { cursor node { accession } } } }",
    "batches": "query($after: String) { batches(first: 2, after: $after) { edges { cursor node { lotNumber } } } }",
    "institutions": "query($after: String) { institutions(first: 2, after: $after) { edges { cursor node { slug } } } "
    "}",
    "a version's batches": """query($after: String) { datasets(first: 3) { nodes { latestVersion {
      batches(first: 2, after: $after) { edges { cursor node { lotNumber } } } } } } }""",
}


def _first_cursor(answer: dict) -> str:
    if "datasets" in answer and "nodes" in answer["datasets"]:
        pages = [node["latestVersion"]["batches"] for node in answer["datasets"]["nodes"]]
        return next(page["edges"][0]["cursor"] for page in pages if page["edges"])
    (connection,) = answer.values()
    return connection["edges"][0]["cursor"]


@pytest.mark.parametrize(
    ("issued", "used"),
    [
        ("batches", "datasets"),
        ("datasets", "batches"),
        ("institutions", "a version's batches"),
        ("a version's batches", "institutions"),
    ],
)
async def test_a_cursor_of_another_collection_is_refused(callers, issued, used):
    principal = await callers.principal("leiden-scgt", Role.reader)
    cursor = _first_cursor((await callers.ask("reference", principal, PAGES[issued], {}))[0])
    for schema in callers.schemas.values():
        context = Context(principal=principal, session=callers.session, settings=callers.settings, ids=callers.ids)
        result = await schema.execute(PAGES[used], variable_values={"after": cursor}, context_value=context)
        assert result.errors, result.data
        error = result.errors[0]
        # Rendered by the protected schema's error extension; the bare reference schema keeps the domain error.
        coded = error.extensions or {"code": error.original_error.code, "field": error.original_error.field}
        assert coded == {"code": "invalid_input", "field": "after"}, result.errors
        assert "another ordering" in error.message


def test_only_what_the_database_renders_as_the_api_is_compiled():
    kinds = build_schema()._schema.type_map
    columns = {
        (kind, name): compiled._column(kinds[kind], name) for kind in compiled.MODELS for name in kinds[kind].fields
    }
    assert columns["Batch", "volumeMl"].render == "text"
    assert columns["DatasetVersion", "publishedAt"].render == "timestamp"
    assert columns["DatasetVersion", "description"].render == "value"
    assert columns["Batch", "harvested"] is json_pages.HARVESTED
    for float_or_id in [("Batch", "totalCells"), ("Batch", "id"), ("QcResult", "id"), ("Dataset", "institution")]:
        assert columns[float_or_id] is None


def test_plans_of_different_kinds_are_different_plans():
    """A plan is the key of its kept statement: a list and a single object of the same fields must differ."""
    shape = json_pages.Shape((("title", json_pages.Column("title", "value")),))
    assert len({json_pages.Listed(shape), json_pages.Latest(shape), json_pages.Edges(shape)}) == 3
    assert json_pages.Constant("hasNextPage") != json_pages.Flag("hasNextPage")


async def test_a_field_merged_differently_by_two_operations_of_one_document_is_planned_for_each(callers):
    """Found in review: one parsed document, the same fragment's field node in both operations, merged with more
    in the second; a plan kept for the first node alone answered the second (compiled) without `doi`."""
    principal = await callers.principal("leiden-scgt", Role.reader)
    document = """query A { ...F }
      query B { ...F datasets(first: 2) { nodes { doi } } }
      fragment F on Query { datasets(first: 2) { nodes { accession } } }"""
    first, _ = await callers.both(principal, document, operation="A")
    second, statements = await callers.both(principal, document, operation="B")
    assert set(first["datasets"]["nodes"][0]) == {"accession"}
    assert set(second["datasets"]["nodes"][0]) == {"accession", "doi"}
    assert json_pages.MARK not in statements  # a field merged from two nodes is graphql-core's to merge


async def test_a_request_too_long_to_keep_is_answered_by_the_usual_execution(callers):
    """Its statement would be kept with it (`search.KEPT_TEXT`): the usual path builds one for it alone."""
    principal = await callers.principal("leiden-scgt", Role.reader)
    long_title = "x" * search.KEPT_TEXT
    filter = {"or": [{"title": {"eq": long_title}}, {"accessRights": {"in": ["public"]}}]}
    answer, statements = await callers.both(principal, FILTERED, {"filter": filter})
    assert answer["datasets"]["nodes"] and json_pages.MARK not in statements
