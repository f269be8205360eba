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
the normal execution. The statement (`catalogue.json_pages`) carries the same visibility rules, search, filter,
ordering and keyset cursors as the usual reads; the tests compare both executions for every kind of caller.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
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
    inspect,
    literal_column,
)
from sqlalchemy import Enum as SqlEnum
from strawberry.types.nodes import get_variable_values

from cellcommons.access import visibility
from cellcommons.catalogue import json_pages, reading
from cellcommons.catalogue import search as finding
from cellcommons.catalogue.json_pages import (
    CURSOR,
    HARVESTED,
    BatchPage,
    Column,
    Constant,
    Edges,
    Flag,
    Latest,
    Listed,
    Shape,
)
from cellcommons.catalogue.models import Batch, Dataset, DatasetVersion, QcResult
from cellcommons.graphql.execution import Completed, plain_field
from cellcommons.graphql.kept import Kept

MODELS = {"Dataset": Dataset, "DatasetVersion": DatasetVersion, "Batch": Batch, "QcResult": QcResult}
MAX_KEYS = 50  # json_build_object takes at most 100 arguments
KEPT = 256  # plans kept (clients repeat a few queries)
NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]*$")  # a GraphQL name: safe to write into SQL as a string literal
EMPTY = literal_column("'[]'::json")
MARK = "json_build_object"  # in the compiled statement, in no other statement of the API's


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

    def shape(self, kind: GraphQLObjectType, selections: Any, entry_of: Callable[[Field], Any]) -> Shape | None:
        """Each field asked of `kind` as `entry_of` plans it (`__typename` as the type's name); None as soon as one
        cannot be compiled."""
        fields = self.selected(selections, kind.name)
        if fields is None:
            return None
        entries = []
        for field in fields:
            entry = Constant(kind.name) if field.name == "__typename" else entry_of(field)
            if entry is None:
                return None
            entries.append((field.key, entry))
        return Shape(tuple(entries))

    def object(self, kind: GraphQLObjectType, selections: Any) -> Shape | None:
        return self.shape(kind, selections, lambda field: self.object_field(kind, field))

    def object_field(self, kind: GraphQLObjectType, field: Field) -> Any:
        place = (kind.name, field.name)
        if place == ("DatasetVersion", "batches"):
            return self.batch_page(kind, field)
        if field.arguments:
            return None
        if place == ("Dataset", "latestVersion"):
            version = self.object(_named(kind, field), field.selections)
            return Latest(version) if version is not None else None
        if place == ("Batch", "qcResults"):
            result = self.object(_named(kind, field), field.selections)
            return Listed(result) if result is not None else None
        return None if field.selections else _column(kind, field.name)

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

        def part(field: Field) -> Any:
            if field.arguments:
                return None
            named = _named(kind, field) if field.name in kind.fields else None
            if field.name == "nodes":
                node = self.object(named, field.selections)
                return Listed(node) if node is not None else None
            if field.name == "edges":
                edge = self.shape(named, field.selections, lambda f: self.edge_field(named, f, nested))
                return Edges(edge) if edge is not None else None
            if field.name == "pageInfo":
                flags = {"hasNextPage", "hasPreviousPage"} | (set() if nested else {"startCursor", "endCursor"})
                return self.shape(named, field.selections, lambda f: _flag(f, flags))
            return None

        return self.shape(kind, selections, part)

    def edge_field(self, kind: GraphQLObjectType, field: Field, nested: bool) -> Any:
        if field.arguments:
            return None
        if field.name == "node":
            return self.object(_named(kind, field), field.selections)
        return CURSOR if field.name == "cursor" and not nested else None


def _flag(field: Field, flags: set[str]) -> Flag | None:
    return Flag(field.name) if field.name in flags and not field.arguments else None


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
PLANS: Kept[tuple, tuple[tuple, Plan]] = Kept(KEPT)


def _plan(info: Any) -> Plan:
    """The plan of the `datasets` field being resolved, worked out once per parsed document (the parser cache
    hands back the same nodes for the same text)."""
    raw = info._raw_info
    nodes = raw.field_nodes
    key = (id(raw.schema), *map(id, nodes))
    kept = PLANS.get(key)
    if kept is not None:
        return kept[1]
    planner = Planner(raw.fragments)
    connection = None
    if len(nodes) == 1 and not nodes[0].directives and nodes[0].selection_set:
        connection = planner.connection(get_named_type(raw.return_type), nodes[0].selection_set.selections,
                                        nested=False)  # fmt: skip
    plan = Plan(connection, tuple(planner.sizes))
    return PLANS.put(key, (tuple(nodes), plan))[1]


async def dataset_page(info: strawberry.Info, request: reading.PageRequest, query: finding.Query) -> Completed | None:
    """The `datasets` field's answer from one statement, or None when the selection asks for more than it
    compiles (the resolver then answers as usual)."""
    context = info.context
    asked = finding.Asked(query)
    # A long request's statement is not kept (`finding.KEPT_TEXT`): the usual path builds its own for it.
    if not context.completes_ahead or request.first is None or request.before is not None or not asked.kept:
        return None
    plan = _plan(info)
    sizes = _sizes(plan.sizes, get_variable_values(info._raw_info)) if plan.connection is not None else None
    if sizes is None:
        return None
    principal = context.principal
    roles = None if principal is None else principal.roles
    # The cursor is checked against the ordering before anything runs, as the usual path does.
    reading.checked_cursors(finding.find_datasets(json_pages.standing(roles), query).ordering, request)
    after = request.after
    null = None if after is None else tuple(value is None for value in after.values)
    statement = json_pages.page_statement(plan.connection, asked, roles, null)
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
                parts = []  # (name, the column of its node's JSON | CURSOR | a constant)
                for name, part in edge.entries:
                    parts.append((name, column if isinstance(part, Shape) else part))
                    column += isinstance(part, Shape)
                answer[key] = [{name: _part(p, row, i, cursor) for name, p in parts} for i, row in enumerate(rows)]
            case Shape(entries):  # pageInfo
                answer[key] = {name: flags[p.name]() if isinstance(p, Flag) else p.value for name, p in entries}
    return answer


def _part(part: Any, row: tuple, index: int, cursor: Callable[[int], str]) -> Any:
    """An edge's field: its node's JSON (the column it is in), its cursor, or a constant."""
    if type(part) is int:
        return loads(row[part])
    return cursor(index) if part == CURSOR else part.value
