"""What a query costs, computed from the validated document and the coerced variables before any resolver runs.

GitHub's model: a connection (a field whose type name ends in `Connection`) costs its page size × (the cost
of what it selects + 1); other fields cost what they select; the query costs the sum. Aggregates read every row
the connection finds whatever its page size, so each (`totalCount`, each field of `facets`) costs
`aggregate_cost` on top: without that, thirty aliases of `first: 0 { totalCount facets {…} }` cost nothing.
Fields are collected as the executor collects them (fragments, type conditions, @skip/@include, fields merged by
response key), so the figure is what execution would actually fetch at most. Abstract types cost their dearest
possible type.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLField,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    OperationDefinitionNode,
    get_named_type,
    get_operation_ast,
    is_abstract_type,
    is_object_type,
)
from graphql.execution import VariableValues, get_argument_values, get_variable_values
from graphql.execution.collect_fields import (
    FieldDetails,
    FragmentDetails,
    GroupedFieldSet,
    collect_fields,
    collect_subfields,
)

from cellcommons.graphql.limits.config import Limits, limit_error

PAGE_ARGUMENTS = ("first", "last")
COUNT, FACETS = "totalCount", "facets"  # a connection's aggregates


@dataclass
class Measurement:
    cost: int = 0
    errors: list[GraphQLError] = field(default_factory=list)


def measure(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: dict[str, Any] | None,
    limits: Limits,
    *,
    hide_suggestions: bool,
) -> Measurement:
    """The cost of the operation to execute, or the errors that refuse it (variables, page sizes, the cap)."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return Measurement()  # the executor reports the missing operation
    coerced = get_variable_values(
        schema, operation.variable_definitions or (), variables or {}, hide_suggestions=hide_suggestions
    )
    if isinstance(coerced, list):
        return Measurement(errors=coerced)
    walk = _CostWalk(schema, document, operation, coerced, limits)
    cost = walk.root()
    if walk.errors:
        return Measurement(cost, list(walk.errors.values()))
    if cost > limits.max_query_cost:
        error = limit_error(
            "query_too_costly",
            f"the query may return {cost} nodes; the limit is {limits.max_query_cost}",
            operation,
            cost=cost,
            limit=limits.max_query_cost,
        )
        return Measurement(cost, [error])
    return Measurement(cost)


class _CostWalk:
    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: VariableValues,
        limits: Limits,
    ):
        self.schema = schema
        self.operation = operation
        self.variables = variables
        self.limits = limits
        self.fragments = {
            d.name.value: FragmentDetails(d) for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        # Keyed by field path: a field under an abstract type is walked once per possible type.
        self.errors: dict[tuple[str, str], GraphQLError] = {}

    def root(self) -> int:
        root_type = self.schema.get_root_type(self.operation.operation)
        if root_type is None:
            return 0  # validation reports an operation type the schema lacks
        collected = collect_fields(self.schema, self.fragments, self.variables, root_type, self.operation)
        return self._fields(root_type, collected.grouped_field_set, ())

    def _fields(self, parent: GraphQLObjectType, grouped: GroupedFieldSet, path: tuple[str, ...]) -> int:
        return sum(self._field(parent, details, (*path, key)) for key, details in grouped.items())

    def _field(self, parent: GraphQLObjectType, details: list[FieldDetails], path: tuple[str, ...]) -> int:
        definition = parent.fields.get(details[0].node.name.value)
        if definition is None:
            return 0  # meta fields (__typename, __schema, __type) read no data
        named = get_named_type(definition.type)
        if not named.name.endswith("Connection"):
            return max(self._selected(named, details, path), default=0)
        page_size = self._page_size(definition, details[0].node, path)  # first, so errors read outside in
        page = page_size * (max(self._selected(named, details, path), default=0) + 1)
        return page + self.limits.aggregate_cost * self._aggregates(named, details)

    def _aggregates(self, connection: GraphQLNamedType, details: list[FieldDetails]) -> int:
        """How many aggregates a connection's selection asks for: its count and each facet."""
        count = 0
        for selected in self._subfields(connection, details).values():
            name = selected[0].node.name.value
            if name == COUNT:
                count += 1
            elif name == FACETS:
                facets = get_named_type(connection.fields[FACETS].type)
                count += sum(f[0].node.name.value != "__typename" for f in self._subfields(facets, selected).values())
        return count

    def _subfields(self, named: GraphQLNamedType, details: list[FieldDetails]) -> GroupedFieldSet:
        """The fields selected on `named` under `details`, as the executor collects them (none unless an object)."""
        if not is_object_type(named):
            return {}
        collected = collect_subfields(self.schema, self.fragments, self.variables, self.operation, named, details)
        return collected.grouped_field_set

    def _selected(self, named: GraphQLNamedType, details: list[FieldDetails], path: tuple[str, ...]) -> Iterator[int]:
        if is_abstract_type(named):
            possible: list[GraphQLObjectType] = list(self.schema.get_possible_types(named))
        else:
            possible = [named] if is_object_type(named) else []
        for runtime_type in possible:
            yield self._fields(runtime_type, self._subfields(runtime_type, details), path)

    def _page_size(self, definition: GraphQLField, node: FieldNode, path: tuple[str, ...]) -> int:
        arguments = get_argument_values(definition, node, self.variables)
        sizes = [arguments[name] for name in PAGE_ARGUMENTS if arguments.get(name) is not None]
        where = ".".join(path)
        if not sizes:
            self._report("connection_size_required", where, node, f"'{where}' is a connection: give `first` or `last`")
            return 0
        size = max(max(sizes), 0)
        if size > self.limits.max_page_size:
            self._report(
                "page_size_too_large",
                where,
                node,
                f"'{where}' asks for {size} nodes; a page holds at most {self.limits.max_page_size}",
                size=size,
                limit=self.limits.max_page_size,
            )
        return size

    def _report(self, code: str, where: str, node: FieldNode, message: str, **details: object) -> None:
        self.errors.setdefault((code, where), limit_error(code, message, node, field=where, **details))
