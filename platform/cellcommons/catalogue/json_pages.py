"""A page of datasets as one SELECT that builds each dataset's JSON in PostgreSQL (`graphql.compiled` plans which
fields it renders): the dataset, its latest visible version, a first page of that version's visible batches and
their QC results, with the same visibility rules (`access.visibility`), search, filter and ordering
(`catalogue.search`) and keyset cursors (`catalogue.reading`) as the usual reads. Compiled once per plan, request
and set of roles, the viewer's institution, page sizes and cursor values parameters of each run.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Integer, String, Text, bindparam, case, cast, false, func, inspect, literal_column, select
from sqlalchemy.dialects.postgresql import UUID, aggregate_order_by
from sqlalchemy.orm import aliased

from cellcommons.access import visibility
from cellcommons.auth.principal import Principal
from cellcommons.catalogue import reading
from cellcommons.catalogue import search as finding
from cellcommons.catalogue.models import Batch, Dataset, DatasetVersion, QcResult, dataset_version_batch
from cellcommons.db import DriverStatement

KEPT = 256  # statements kept (clients repeat a few queries)
NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]*$")  # a GraphQL name: safe to write into SQL as a string literal
EMPTY = literal_column("'[]'::json")
MARK = "json_build_object"  # in this statement, in no other statement of the API's


# ---- the plan: what the selection asks, in terms the statement can build ---------------------------------
# Dataclasses, not tuples: two plans are the same (one kept statement) only when each part is the same kind.


@dataclass(frozen=True)
class Column:
    attribute: str
    render: str  # "value": as the database's JSON has it; "text": a decimal's digits; "timestamp": isoformat


@dataclass(frozen=True)
class Constant:
    value: str  # a type name, for __typename


@dataclass(frozen=True)
class Shape:
    """One object: (response name, what) in the order asked."""

    entries: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Latest:
    version: Shape  # Dataset.latestVersion: the version the page's row was found with


@dataclass(frozen=True)
class BatchPage:
    size: str  # the parameter holding `first`
    connection: Shape  # of Listed / Edges / PageInfo / Constant entries


@dataclass(frozen=True)
class Listed:
    node: Shape  # a connection's `nodes`, or a list of QC results


@dataclass(frozen=True)
class Edges:
    edge: Shape  # of ("node", Listed-like Shape) / Constant entries


@dataclass(frozen=True)
class Flag:
    name: str  # hasNextPage / hasPreviousPage


HARVESTED = Column("origin_node", "harvested")
CURSOR = "cursor"


# ---- the statement -------------------------------------------------------------------------------------------


def _text(value: str) -> Any:
    assert NAME.match(value), value  # names come from a parsed, validated document
    return literal_column(f"'{value}'::text")


def _json_object(entries: tuple, value_of: Callable[[Any], Any]) -> Any:
    """A JSON object of each entry's response name and value, in the order asked."""
    return func.json_build_object(*[part for key, entry in entries for part in (_text(key), value_of(entry))])


def isoformat(column: Any) -> Any:
    """datetime.isoformat() in SQL: microseconds only when there are any, the session's offset as ±HH:MM."""
    fraction = case((func.to_char(column, "US") == "000000", ""), else_=func.to_char(column, ".US"))
    return func.to_char(column, 'YYYY-MM-DD"T"HH24:MI:SS').op("||")(fraction).op("||")(func.to_char(column, "TZH:TZM"))


class Builder:
    """Builds the JSON expressions of one statement: the policy of one set of roles, the viewer a parameter."""

    def __init__(self, principal: Principal | None):
        self.principal = principal
        self.aliases = 0

    def alias(self, model: Any) -> Any:
        self.aliases += 1
        return aliased(model, name=f"{model.__tablename__}_{self.aliases}")

    def object(self, shape: Shape, row: Any, version: Any = None) -> Any:
        """`row(attribute)` reads a column of the object; `version` is the dataset's latest version (a row)."""
        return _json_object(shape.entries, lambda entry: self.value(entry, row, version))

    def value(self, entry: Any, row: Any, version: Any) -> Any:
        match entry:
            case Constant(name):
                return _text(name)
            case Column("origin_node", "harvested"):
                return row("origin_node").is_distinct_from(bindparam("node_id", type_=String))
            case Column(attribute, "text"):
                return cast(row(attribute), Text)
            case Column(attribute, "timestamp"):
                return isoformat(row(attribute))
            case Column(attribute, _):
                return row(attribute)
            case Latest(shape):
                return self.object(shape, version)
            case BatchPage():
                return self.batch_page(entry, row)
            case Listed(shape):
                return self.qc_results(shape, row)
            case Shape():  # an edge's node
                return self.object(entry, row, version)
        raise AssertionError(entry)

    def batch_page(self, page: BatchPage, version: Any) -> Any:
        """The version's visible batches in (created_at, id) order, `first` of them, and whether there are more."""
        link, batch = dataset_version_batch.alias(), self.alias(Batch)
        size = bindparam(page.size, type_=Integer)
        position = func.row_number().over(order_by=(batch.created_at, batch.id)).label("position")
        columns = [getattr(batch, name).label(name) for name in inspect(Batch).columns.keys()]
        rows = (
            select(*columns, position)
            .select_from(link)
            .join(batch, batch.id == link.c.batch_id)
            .where(link.c.dataset_version_id == version("id"), visibility.visible_batches(self.principal, batch))
            .order_by(batch.created_at, batch.id)
            .limit(size + 1)
            .correlate(version.entity)
            .subquery()
        )
        on_page, listed_rows = rows.c.position <= size, Columns(rows)
        flags = {"hasNextPage": func.count() > size, "hasPreviousPage": false()}

        def part(entry: Any) -> Any:
            match entry:
                case Listed(shape) | Edges(shape):  # a JSON array of the page's nodes (or edges), in order
                    listed = func.json_agg(aggregate_order_by(self.object(shape, listed_rows), rows.c.position))
                    return func.coalesce(listed.filter(on_page), EMPTY)
                case Shape(entries):  # pageInfo
                    return _json_object(entries, part)
                case Flag(name):
                    return flags[name]
                case Constant(name):
                    return _text(name)
            raise AssertionError(entry)

        connection = _json_object(page.connection.entries, part)
        return select(connection).select_from(rows).correlate(version.entity).scalar_subquery()

    def qc_results(self, shape: Shape, batch: Any) -> Any:
        result = self.alias(QcResult)
        return (
            select(func.coalesce(func.json_agg(aggregate_order_by(self.object(shape, Entity(result)), result.position)),
                                 EMPTY))
            .where(result.batch_id == batch("id"), visibility.visible_qc_results(self.principal, result))
            .scalar_subquery()
        )  # fmt: skip


class Entity:
    """Columns of a mapped class or alias, by attribute name."""

    def __init__(self, entity: Any):
        self.entity = entity

    def __call__(self, attribute: str) -> Any:
        return getattr(self.entity, attribute)


class Columns:
    """Columns of a subquery, by name."""

    def __init__(self, rows: Any):
        self.entity = rows

    def __call__(self, attribute: str) -> Any:
        return self.entity.c[attribute]


def node_shapes(plan: Shape) -> list[Shape]:
    """The nodes the statement renders, one JSON column each after the sort keys and the id, in plan order."""
    shapes = []
    for _, entry in plan.entries:
        if isinstance(entry, Listed):
            shapes.append(entry.node)
        elif isinstance(entry, Edges):
            shapes += [part for _, part in entry.edge.entries if isinstance(part, Shape)]
    return shapes


class Statement(NamedTuple):
    run: DriverStatement
    ordering: reading.Ordering
    keys: int  # the sort keys' columns, before the dataset's id and the nodes


def standing(roles: frozenset | None) -> Principal | None:
    return None if roles is None else visibility.standing_in(roles)


@functools.lru_cache(maxsize=KEPT)
def page_statement(
    plan: Shape, asked: finding.Asked, roles: frozenset | None, after: tuple[bool, ...] | None
) -> Statement:
    """The page's statement for one set of roles; `after` says which of the cursor's values are NULL (a NULL
    compares differently, see `reading.keyset_select`), the values themselves are parameters."""
    principal = standing(roles)
    found = finding.find_datasets(principal, asked.request)
    ordering = found.ordering
    cursor = None
    if after is not None:
        values = tuple(
            None if null else bindparam(f"after_{i}", type_=key.column.type)
            for i, (null, key) in enumerate(zip(after, ordering.keys, strict=True))
        )
        cursor = reading.Cursor(ordering.name, values, bindparam("after_id", type_=UUID))
    found_rows = found.unhighlighted.with_only_columns(DatasetVersion.id.label("version_id"))
    limit = bindparam("page_size", type_=Integer)
    page = reading.keyset_select(found_rows, ordering, cursor, None, True, limit).subquery("page")
    columns = list(page.c)  # the version's id, the sort keys, the dataset's id
    keys, dataset_id = columns[1:-1], columns[-1]
    builder = Builder(principal)
    dataset, version = builder.alias(Dataset), builder.alias(DatasetVersion)
    # As text, parsed by orjson: psycopg's own JSON loading (the standard library's) is a tenth of a request.
    nodes = [cast(builder.object(shape, Entity(dataset), Entity(version)), Text) for shape in node_shapes(plan)]
    in_order = reading.Ordering(
        ordering.name,
        tuple(reading.SortKey(column, key.nullable) for column, key in zip(keys, ordering.keys, strict=True)),
        dataset_id,
        ordering.descending,
    )
    statement = (
        select(*keys, dataset_id, *nodes)
        .select_from(page)
        .join(dataset, dataset.id == dataset_id)
        .join(version, version.id == page.c.version_id)
        .order_by(*reading.order_clauses(in_order, True))
    )
    return Statement(DriverStatement(statement), ordering, len(keys))
