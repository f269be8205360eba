"""Plain fields read inline answer exactly what graphql-core's own execution answers: values, nulls, errors and
their paths, null propagation; fields with resolvers, extensions or middleware still run."""

from __future__ import annotations

import enum
from pathlib import Path

import pytest
import strawberry
from sqlalchemy import select
from strawberry.extensions import SchemaExtension
from strawberry.permission import BasePermission
from tests.graphql.answers import leaves, opened

from cellcommons.auth.principal import Principal, Role
from cellcommons.catalogue.enums import VersionStatus
from cellcommons.catalogue.models import Dataset, DatasetVersion, Institution, dataset_version_batch
from cellcommons.db import Database
from cellcommons.graphql.context import Context
from cellcommons.graphql.execution import InputsKept, PlainFieldsExecution, _coercion, call_resolvers_directly
from cellcommons.graphql.ids import Identifiers
from cellcommons.graphql.schema import build_schema


@strawberry.enum
class Status(enum.Enum):
    released = "released"
    quarantined = "quarantined"


class Deny(BasePermission):
    message = "denied"

    def has_permission(self, source, info, **kwargs) -> bool:
        return False


@strawberry.type
class Lot:
    number: str
    status: Status
    volume: float | None
    tags: list[str]
    secret: str | None = strawberry.field(default="kept", permission_classes=[Deny])

    @strawberry.field
    async def label(self) -> str:
        return f"lot {self.number}"


CLEAN = [
    Lot(number="A1", status=Status.released, volume=1.5, tags=["x", "y"]),
    Lot(number="A2", status=Status.quarantined, volume=None, tags=[]),
]


@strawberry.type
class Query:
    @strawberry.field
    def clean_lots(self) -> list[Lot]:
        return CLEAN

    @strawberry.field
    def lots(self) -> list[Lot | None]:
        return [
            *CLEAN,
            Lot(number=None, status=Status.released, volume=2.0, tags=["z"]),  # breaks `number: String!`
            Lot(number="A4", status="not a status", volume=3.0, tags=["w"]),  # does not coerce
            Lot(number="A5", status=Status.released, volume=4.0, tags=[None]),  # breaks `[String!]!`
        ]


QUERY = "{ lots { number status volume tags label secret } }"
# Lists of objects with only plain fields: answered inline when every item reads cleanly (cleanLots), else not.
PLAIN_ONLY = "{ cleanLots { number status volume tags } lots { number status volume tags } }"


class Shout(SchemaExtension):
    """A per-field hook: with one in the request, every field must go through it."""

    def resolve(self, _next, root, info, *args, **kwargs):
        value = _next(root, info, *args, **kwargs)
        return value.upper() if isinstance(value, str) else value


async def _execute(execution_context_class=None, extensions=(), query=QUERY) -> dict:
    schema = strawberry.Schema(Query, execution_context_class=execution_context_class, extensions=list(extensions))
    result = await schema.execute(query)
    return {"data": result.data, "errors": sorted((e.message, tuple(e.path)) for e in result.errors or [])}


async def test_plain_fields_answer_as_graphql_core_does():
    ours, reference = await _execute(PlainFieldsExecution), await _execute()
    assert ours == reference
    # What the reference answers, so that equality means something: values, nulls and each failure in place.
    assert ours["data"]["lots"][0] == {
        "number": "A1", "status": "released", "volume": 1.5, "tags": ["x", "y"], "label": "lot A1", "secret": None,
    }  # fmt: skip
    assert ours["data"]["lots"][1]["volume"] is None
    assert ours["data"]["lots"][2:] == [None, None, None]
    failed = {path for _, path in ours["errors"]}
    assert {("lots", 2, "number"), ("lots", 3, "status"), ("lots", 4, "tags", 0)} <= failed
    assert ("denied", ("lots", 0, "secret")) in ours["errors"]


async def test_a_list_of_plain_objects_answers_as_graphql_core_does():
    ours = await _execute(PlainFieldsExecution, query=PLAIN_ONLY)
    assert ours == await _execute(query=PLAIN_ONLY)
    clean = [
        {"number": "A1", "status": "released", "volume": 1.5, "tags": ["x", "y"]},
        {"number": "A2", "status": "quarantined", "volume": None, "tags": []},
    ]
    assert ours["data"]["cleanLots"] == ours["data"]["lots"][:2] == clean
    failed = {path for _, path in ours["errors"]}
    assert failed == {("lots", 2, "number"), ("lots", 3, "status"), ("lots", 4, "tags", 0)}


async def test_a_per_field_hook_still_sees_every_field():
    ours = await _execute(PlainFieldsExecution, [Shout])
    assert ours == await _execute(None, [Shout])
    assert ours["data"]["lots"][0]["number"] == "A1".upper()


def test_the_api_schema_executes_plain_fields_inline():
    assert build_schema().execution_context_class is PlainFieldsExecution


def _outcome(coerce, value):
    try:
        return coerce(value)
    except Exception as error:  # the same failure is part of the same answer
        return type(error)


def test_enums_read_inline_name_what_strawberry_names():
    """Each API enum's members, and their raw values, coerce to the same name (or fail the same way) read inline."""
    enums = [t for t in build_schema()._schema.type_map.values() if getattr(t, "wrapped_cls", None)]
    assert len(enums) > 10
    for leaf in enums:
        fast = _coercion(leaf)
        for member in leaf.wrapped_cls:
            assert fast(member) == leaf.coerce_output_value(member)
            assert _outcome(fast, member.value) == _outcome(leaf.coerce_output_value, member.value)


OPERATIONS = Path(__file__).resolve().parents[2] / "graphql_schema" / "operations"
NESTED_PAGE = """query($first: Int!) { datasets(first: $first, search: "MSC") { totalCount
  edges { cursor rank highlight node { id accession harvested latestVersion { id title status keywords
    batches(first: 5) { pageInfo { hasNextPage endCursor } nodes { id lotNumber releaseStatus passage
      qcResults { id testType analyte timepoint value unit passed } } } } } }
  pageInfo { startCursor endCursor hasNextPage } } }"""
# Documented read operations, and variables that find something in the seeded consortium.
READS = {
    "batches_of_a_tissue_source": {"tissue": "UBERON:0002371", "first": 5},
    "dataset_with_batches_and_qc": {},  # the id of a seeded dataset, below
    "datasets_by_batch_quality": {"first": 10, "viability": "70"},
    "search_datasets_with_facets": {"search": "MSC", "first": 5},
    "batch_facets": {"filter": {"passage": {"eq": 3}}},
}


@pytest.mark.parametrize("operation", [*READS, "nested page"])
async def test_the_api_schema_answers_as_strawberry_alone_does(seeded_settings, operation):
    """Plain fields read inline and resolvers called directly change no answer to the documented reads."""
    database = Database(seeded_settings)
    ids = Identifiers(seeded_settings.secret_key.get_secret_value())
    try:
        async with database.sessions() as session:
            institution = await session.scalar(select(Institution).where(Institution.slug == "leiden-scgt"))
            # A published dataset of the caller's own institution with linked lots (the seed writes every row in
            # one transaction: ordering by creation time would pick any of them, hidden ones included).
            dataset = await session.scalar(
                select(Dataset.id)
                .join(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
                .join(dataset_version_batch, dataset_version_batch.c.dataset_version_id == DatasetVersion.id)
                .where(Dataset.institution_id == institution.id, DatasetVersion.status == VersionStatus.published)
                .order_by(Dataset.id)
                .limit(1)
            )
        principal = Principal(institution.id, institution.slug, "alice", frozenset({Role.reader}))
        if operation == "nested page":
            query, variables = NESTED_PAGE, {"first": 20}
        else:
            query = (OPERATIONS / f"{operation}.graphql").read_text()
            variables = READS[operation] or {"id": ids.global_id("Dataset", dataset)}
        answers = []
        for schema in (build_schema(), build_schema(fast_paths=False)):
            async with database.sessions() as session:
                context = Context(principal=principal, session=session, settings=seeded_settings, ids=ids)
                result = await schema.execute(query, variable_values=variables, context_value=context)
            assert not result.errors, result.errors
            answers.append(opened(result.data, ids))
    finally:
        await database.dispose()
    assert answers[0] == answers[1]
    assert leaves(answers[0]) > 20  # an answer with something in it, so that equality means something


def test_a_query_fields_input_objects_are_converted_once_per_value():
    schema = build_schema()
    inputs = InputsKept(schema._schema.query_type.fields["datasets"], schema, size=2)
    first = inputs({"filter": {"tissue": {"eq": "UBERON:0002371"}}, "first": 5})
    again = inputs({"filter": {"tissue": {"eq": "UBERON:0002371"}}, "first": 7, "orderBy": None})
    other = inputs({"filter": {"tissue": {"eq": "UBERON:0001013"}}})
    assert type(first["filter"]).__name__ == "DatasetFilter" and first["first"] == 5
    assert again["filter"] is first["filter"] and again["first"] == 7 and again["order_by"] is None
    assert other["filter"] is not first["filter"] and other["filter"].tissue.eq == "UBERON:0001013"
    inputs({"filter": {"keywords": {"anyOf": ["MSC"]}}})  # a third value: the least recently used goes
    assert inputs({"filter": {"tissue": {"eq": "UBERON:0002371"}}})["filter"] is not first["filter"]
    large = {"filter": {"keywords": {"anyOf": ["x" * 100] * 200}}}  # larger than CACHED_TEXT: converted each time
    assert inputs(large)["filter"] is not inputs(large)["filter"]


@strawberry.type
class Sources:
    @strawberry.field
    async def runs(self, source: str, first: int | None = None) -> list[str]:
        return [source] * (first or 1)


async def test_a_query_field_called_directly_takes_any_argument_name():
    """`source` is also the name of the parent the resolver is handed: an argument of that name still arrives."""
    schema = strawberry.Schema(Sources, execution_context_class=PlainFieldsExecution)
    result = await call_resolvers_directly(schema).execute('{ runs(source: "leiden-lims", first: 2) }')
    assert result.errors is None and result.data == {"runs": ["leiden-lims", "leiden-lims"]}
