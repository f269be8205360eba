"""A page of datasets answered by one statement that builds its JSON (as PostGraphile and Hasura do).

Executed field by field, a page of 20 datasets × 5 batches × their QC results is ~2 000 values, each read,
coerced and placed by graphql-core in Python: most of the request's time, several times the database's. Here the
selection is compiled to one SELECT that renders each dataset — its latest visible version, a page of that
version's visible batches, their QC results — as JSON in the database; Python seals the cursors and puts the
page together.

Only what the database renders exactly as the API's scalars do is compiled: plain columns of the catalogue's
types (strings, booleans, integers, dates, timestamps, fixed-point decimals, enums whose names are their stored
values, string lists), `harvested`, `__typename`, those three relations and the connections' `nodes`,
`edges { node }` and `pageInfo` (and, at the top, cursors). Any other field (a resolver, a global id, a float,
a count, facets, a nested cursor), a directive or a field asked twice under one name leaves the whole field to
the normal execution. The statement carries the same visibility rules (`access.visibility`), the same search,
filter and ordering (`catalogue.search`), and the same keyset cursors (`catalogue.reading`); the tests compare
both executions for every kind of caller.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

import strawberry
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLObjectType,
    IntValueNode,
    NullValueNode,
    ValueNode,
    VariableNode,
    get_named_type,
)
from orjson import loads
from sqlalchemy import (
    ARRAY,
    Boolean,
    Date,
    DateTime,
    Integer,
    Numeric,
    String,
    Text,
    bindparam,
    case,
    cast,
    false,
    func,
    inspect,
    literal_column,
    select,
)
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.dialects.postgresql import UUID, aggregate_order_by
from sqlalchemy.orm import aliased
from strawberry.types.nodes import get_variable_values

from cellcommons.access import visibility
from cellcommons.auth.principal import Principal
from cellcommons.catalogue import reading
from cellcommons.catalogue import search as finding
from cellcommons.catalogue.models import Batch, Dataset, DatasetVersion, QcResult, dataset_version_batch
from cellcommons.db import DriverStatement
from cellcommons.graphql.execution import Completed, plain_field

MODELS = {"Dataset": Dataset, "DatasetVersion": DatasetVersion, "Batch": Batch, "QcResult": QcResult}
MAX_KEYS = 50  # json_build_object takes at most 100 arguments
KEPT = 256  # compiled statements kept (clients repeat a few queries)
NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]*$")  # a GraphQL name: safe to write into SQL as a string literal
EMPTY = literal_column("'[]'::json")
MARK = "json_build_object"  # in the compiled statement, in no other statement of the API's


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


class Field(NamedTuple):
    """A field asked, as written (graphql-core's nodes; Strawberry's conversion of them costs more than this)."""

    name: str
    key: str  # the response name
    arguments: dict[str, ValueNode]
    selections: tuple


class Size(NamedTuple):
    """Where a nested page's arguments come from: a literal or a variable, read at each request."""

    param: str
    first: ValueNode | None
    others: tuple[ValueNode, ...]  # after, last, before: the page is compiled only when all are null


class Planner:
    """Walks the selection of the `datasets` field once per document (cached by the caller)."""

    def __init__(self, fragments: dict[str, FragmentDefinitionNode]):
        self.fragments = fragments
        self.sizes: list[Size] = []

    def selected(self, selections: Any, type_name: str) -> list[Field] | None:
        """The fields asked of `type_name`, through fragments; None where a directive or a repeated name asks
        for graphql-core's own merging."""
        fields: list[Field] = []
        for selection in selections:
            if selection.directives:
                return None
            if isinstance(selection, FieldNode):
                arguments = {argument.name.value: argument.value for argument in selection.arguments or ()}
                inner = selection.selection_set.selections if selection.selection_set else ()
                key = selection.alias.value if selection.alias else selection.name.value
                fields.append(Field(selection.name.value, key, arguments, tuple(inner)))
                continue
            fragment = (
                self.fragments.get(selection.name.value) if isinstance(selection, FragmentSpreadNode) else selection
            )
            condition = fragment.type_condition.name.value if fragment and fragment.type_condition else None
            if fragment is None or condition not in (None, type_name):
                return None
            inner = self.selected(fragment.selection_set.selections, type_name)
            if inner is None:
                return None
            fields += inner
        keys = [field.key for field in fields]
        return fields if len(set(keys)) == len(keys) <= MAX_KEYS else None

    def object(self, kind: GraphQLObjectType, selections: Any) -> Shape | None:
        fields = self.selected(selections, kind.name)
        entries = []
        for field in fields or ():
            if field.name == "__typename":
                entry = Constant(kind.name)
            elif field.arguments and (kind.name, field.name) != ("DatasetVersion", "batches"):
                entry = None
            elif (kind.name, field.name) == ("Dataset", "latestVersion"):
                version = self.object(_named(kind, field), field.selections)
                entry = Latest(version) if version is not None else None
            elif (kind.name, field.name) == ("DatasetVersion", "batches"):
                entry = self.batch_page(kind, field)
            elif (kind.name, field.name) == ("Batch", "qcResults"):
                result = self.object(_named(kind, field), field.selections)
                entry = Listed(result) if result is not None else None
            else:
                entry = None if field.selections else _column(kind, field.name)
            if entry is None:
                return None
            entries.append((field.key, entry))
        return Shape(tuple(entries)) if fields is not None else None

    def batch_page(self, kind: GraphQLObjectType, field: Field) -> BatchPage | None:
        if set(field.arguments) - {"first", "after", "last", "before"}:
            return None
        connection = self.connection(_named(kind, field), field.selections, nested=True)
        if connection is None:
            return None
        others = tuple(field.arguments[name] for name in ("after", "last", "before") if name in field.arguments)
        size = Size(f"batches_{len(self.sizes)}", field.arguments.get("first"), others)
        self.sizes.append(size)
        return BatchPage(size.param, connection)

    def connection(self, kind: GraphQLObjectType, selections: Any, *, nested: bool) -> Shape | None:
        """`nodes`, `edges { node }` (with `cursor` at the top only), `pageInfo` (cursors at the top only)."""
        fields = self.selected(selections, kind.name)
        entries = []
        for field in fields or ():
            if field.name == "__typename":
                entry = Constant(kind.name)
            elif field.arguments:
                entry = None
            elif field.name == "nodes":
                node = self.object(_named(kind, field), field.selections)
                entry = Listed(node) if node is not None else None
            elif field.name == "edges":
                entry = self.edges(_named(kind, field), field.selections, nested)
            elif field.name == "pageInfo":
                entry = self.page_info(_named(kind, field), field.selections, nested)
            else:
                entry = None
            if entry is None:
                return None
            entries.append((field.key, entry))
        return Shape(tuple(entries)) if fields is not None else None

    def edges(self, kind: GraphQLObjectType, selections: Any, nested: bool) -> Edges | None:
        fields = self.selected(selections, kind.name)
        entries = []
        for field in fields or ():
            if field.name == "__typename":
                entry = Constant(kind.name)
            elif field.name == "node":
                entry = self.object(_named(kind, field), field.selections)
            elif field.name == "cursor" and not nested:
                entry = CURSOR
            else:
                entry = None
            if entry is None or field.arguments:
                return None
            entries.append((field.key, entry))
        return Edges(Shape(tuple(entries))) if fields is not None else None

    def page_info(self, kind: GraphQLObjectType, selections: Any, nested: bool) -> Shape | None:
        fields = self.selected(selections, kind.name)
        flags = {"hasNextPage", "hasPreviousPage"} | (set() if nested else {"startCursor", "endCursor"})
        entries = []
        for field in fields or ():
            if field.name == "__typename":
                entries.append((field.key, Constant(kind.name)))
            elif field.name in flags and not field.arguments:
                entries.append((field.key, Flag(field.name)))
            else:
                return None
        return Shape(tuple(entries)) if fields is not None else None


@functools.cache
def _column(kind: GraphQLObjectType, name: str) -> Column | None:
    """How the database renders the plain field `name` of `kind` exactly as the API does, or None."""
    model, field = MODELS.get(kind.name), kind.fields.get(name)
    shape = plain_field(field) if model is not None and field is not None else None
    if shape is None:
        return None
    if shape.attribute == "harvested":
        return HARVESTED
    column = inspect(model).columns.get(shape.attribute)
    if column is None or (column.nullable and not shape.nullable and not shape.is_list):
        return None
    leaf, sql = get_named_type(field.type), column.type
    if isinstance(sql, ARRAY):
        render = "value" if shape.is_list and isinstance(sql.item_type, String) and leaf.name == "String" else None
    elif isinstance(sql, SqlEnum):
        members = sql.enum_class
        named = members is not None and all(m.name == m.value for m in members)
        render = "value" if named and isinstance(leaf, GraphQLEnumType) else None
    elif isinstance(sql, Numeric):
        # Fixed scale up to 6: the database's digits are str(Decimal) of the same value (no exponent form).
        fixed = sql.scale is not None and sql.scale <= 6 and sql.asdecimal is not False
        render = "text" if fixed and leaf.name == "Decimal" else None
    elif isinstance(sql, DateTime):
        render = "timestamp" if sql.timezone and leaf.name == "DateTime" else None
    else:
        # Integer exactly: a bigint may be beyond GraphQL's Int, which the API reports as an error.
        plain = {"Boolean": isinstance(sql, Boolean), "String": isinstance(sql, String), "Date": isinstance(sql, Date),
                 "Int": type(sql) is Integer}  # fmt: skip
        render = "value" if plain.get(leaf.name) else None
    return Column(shape.attribute, render) if render else None


def _named(kind: GraphQLObjectType, field: Field) -> Any:
    return get_named_type(kind.fields[field.name].type)


def _value(node: ValueNode | None, variables: dict) -> Any:
    """An argument's value: a literal as written (ints), a variable as coerced."""
    if node is None or isinstance(node, NullValueNode):
        return None
    if isinstance(node, VariableNode):
        return variables.get(node.name.value)
    return int(node.value) if isinstance(node, IntValueNode) else node


def _sizes(sizes: tuple[Size, ...], variables: dict) -> dict[str, int] | None:
    """Each nested page's `first`, or None when a page asks for more than a first page of 0 to 100 (the field
    itself then answers, or refuses)."""
    asked = {}
    for size in sizes:
        first = _value(size.first, variables)
        if type(first) is not int or not 0 <= first <= reading.MAX_PAGE:
            return None
        if any(_value(other, variables) is not None for other in size.others):
            return None
        asked[size.param] = first
    return asked


class Plan(NamedTuple):
    connection: Shape | None  # None: not compiled
    sizes: tuple[Size, ...]


# (schema, the field's nodes) → (the nodes, kept so their ids stay theirs; the plan). All the nodes: one document
# may merge a field from several places, differently in each of its operations.
PLANS: OrderedDict[tuple, tuple[Any, Plan]] = OrderedDict()


def _plan(info: Any) -> Plan:
    """The plan of the `datasets` field being resolved, worked out once per parsed document (the parser cache
    hands back the same nodes for the same text)."""
    raw = info._raw_info
    nodes = raw.field_nodes
    key = (id(raw.schema), *map(id, nodes))
    kept = PLANS.get(key)
    if kept is not None:
        PLANS.move_to_end(key)
        return kept[1]
    planner = Planner(raw.fragments)
    connection = None
    if len(nodes) == 1 and not nodes[0].directives and nodes[0].selection_set:
        connection = planner.connection(get_named_type(raw.return_type), nodes[0].selection_set.selections,
                                        nested=False)  # fmt: skip
    plan = Plan(connection, tuple(planner.sizes))
    PLANS[key] = (tuple(nodes), plan)
    if len(PLANS) > KEPT:
        PLANS.popitem(last=False)
    return plan


# ---- the statement -------------------------------------------------------------------------------------------


def _text(value: str) -> Any:
    assert NAME.match(value), value  # names come from a parsed, validated document
    return literal_column(f"'{value}'::text")


def _isoformat(column: Any) -> Any:
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
        arguments = []
        for key, entry in shape.entries:
            arguments += [_text(key), self.value(entry, row, version)]
        return func.json_build_object(*arguments)

    def value(self, entry: Any, row: Any, version: Any) -> Any:
        match entry:
            case Constant(name):
                return _text(name)
            case Column("origin_node", "harvested"):
                return row("origin_node").is_distinct_from(bindparam("node_id", type_=String))
            case Column(attribute, "text"):
                return cast(row(attribute), Text)
            case Column(attribute, "timestamp"):
                return _isoformat(row(attribute))
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
                    return func.json_build_object(*[a for k, e in entries for a in (_text(k), part(e))])
                case Flag(name):
                    return flags[name]
                case Constant(name):
                    return _text(name)
            raise AssertionError(entry)

        connection = func.json_build_object(*[a for k, e in page.connection.entries for a in (_text(k), part(e))])
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


# ---- the page ---------------------------------------------------------------------------------------------


def _node_shapes(plan: Shape) -> list[Shape]:
    """The nodes the statement renders, one JSON column each, in the order `_answer` reads them."""
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


def _standing(roles: frozenset | None) -> Principal | None:
    return None if roles is None else visibility.standing_in(roles)


@functools.lru_cache(maxsize=KEPT)
def _statement(plan: Shape, asked: finding.Asked, roles: frozenset | None, after: tuple[bool, ...] | None) -> Statement:
    """The page's statement for one set of roles; `after` says which of the cursor's values are NULL (a NULL
    compares differently, see `reading.keyset_select`), the values themselves are parameters."""
    principal = _standing(roles)
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
    nodes = [cast(builder.object(shape, Entity(dataset), Entity(version)), Text) for shape in _node_shapes(plan)]
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


async def dataset_page(info: strawberry.Info, request: reading.PageRequest, query: finding.Query) -> Completed | None:
    """The `datasets` field's answer from one statement, or None when the selection asks for more than it
    compiles (the resolver then answers as usual)."""
    context = info.context
    if not context.completes_ahead or request.first is None or request.before is not None:
        return None
    plan = _plan(info)
    sizes = _sizes(plan.sizes, get_variable_values(info._raw_info)) if plan.connection is not None else None
    if sizes is None:
        return None
    principal = context.principal
    roles = None if principal is None else principal.roles
    # The cursor is checked against the ordering before anything runs, as the usual path does.
    reading.checked_cursors(finding.find_datasets(_standing(roles), query).ordering, request)
    after = request.after
    null = None if after is None else tuple(value is None for value in after.values)
    statement = _statement(plan.connection, finding.Asked(query), roles, null)
    params: dict[str, Any] = {**sizes, "page_size": request.first + 1, "node_id": context.settings.node_id}
    if principal is not None:
        params[visibility.VIEWER] = principal.institution_id
    if after is not None:
        params |= {f"after_{i}": value for i, value in enumerate(after.values) if value is not None}
        params["after_id"] = after.id
    wanted = {name: value for name, value in params.items() if name in statement.run.parameters}
    rows = await context.read(functools.partial(statement.run.rows, **wanted))
    more, rows = len(rows) > request.first, rows[: request.first]
    keys = statement.keys
    cursors = [reading.Cursor(statement.ordering.name, tuple(row[:keys]), row[keys]) for row in rows]
    return Completed(_answer(plan.connection, rows, keys + 1, cursors, more, after is not None, context.ids.cursor))


def _answer(plan: Shape, rows: list, first_node: int, cursors: list, more: bool, came_from: bool, seal) -> dict:
    sealed: dict[int, str] = {}

    def cursor(index: int) -> str:
        if index not in sealed:
            sealed[index] = seal(cursors[index])
        return sealed[index]

    flags = {
        "hasNextPage": lambda: more,
        "hasPreviousPage": lambda: came_from,
        "startCursor": lambda: cursor(0) if cursors else None,
        "endCursor": lambda: cursor(len(cursors) - 1) if cursors else None,
    }
    answer: dict[str, Any] = {}
    column = first_node
    for key, entry in plan.entries:
        match entry:
            case Constant(name):
                answer[key] = name
            case Listed():
                answer[key] = [loads(row[column]) for row in rows]
                column += 1
            case Edges(edge):
                parts = []
                for name, part in edge.entries:
                    if isinstance(part, Shape):
                        parts.append((name, column))
                        column += 1
                    else:
                        parts.append((name, part))

                def edge(i: int, row: tuple, parts: list = parts) -> dict:
                    return {name: _part(p, row, lambda: cursor(i)) for name, p in parts}

                answer[key] = [edge(i, row) for i, row in enumerate(rows)]
            case Shape(entries):  # pageInfo
                answer[key] = {name: flags[p.name]() if isinstance(p, Flag) else p.value for name, p in entries}
    return answer


def _part(part: Any, row: tuple, cursor) -> Any:
    """An edge's field: its node's JSON (the column it is in), its cursor, or a constant."""
    if type(part) is int:
        return loads(row[part])
    return cursor() if part == CURSOR else part.value
