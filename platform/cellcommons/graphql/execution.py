"""Execution with plain fields read directly: a page of 20 datasets × 5 batches × 5 QC results is ~2 000 fields,
and nine in ten of them are plain attributes of a scalar or enum type (`lotNumber`, `value`, `unit` …).

graphql-core executes each of those like any other field: a path, a resolve info, Strawberry's basic resolver,
an awaitable check, value completion (8–15 µs each, the bulk of a page's time). For a field Strawberry itself
resolves by `getattr` (no resolver, no field extension or permission, no middleware in the request) the answer is
`coerce_output_value(getattr(source, name))`; this context computes that inline. Anything else — resolvers,
objects, nulls, values that do not coerce — goes through graphql-core's own path, so errors, their paths and
null propagation are exactly graphql-core's. Which fields are plain is worked out once per selection set per
request (graphql-core already collects a selection set once per request and hands back the same grouping).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, NamedTuple

import strawberry
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLLeafType,
    GraphQLList,
    GraphQLObjectType,
    GraphQLOutputType,
    Undefined,
    get_nullable_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
)
from graphql.pyutils import Path, gather_with_cancel
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.arguments import convert_argument

from cellcommons.graphql.kept import Kept
from cellcommons.graphql.limits.config import CACHED_TEXT


class Completed(NamedTuple):
    """A field's value already in its response shape (`graphql.compiled`): passed on as it is."""

    value: Any


class PlainField(NamedTuple):
    attribute: str
    coerce: Callable[[Any], Any]  # the leaf type's coerce_output_value, or an equal but faster one
    nullable: bool
    is_list: bool  # a list of non-null leaves (`keywords: [String!]!`)


def plain_field(field: GraphQLField) -> PlainField | None:
    """How to read `field` directly, or None when graphql-core must execute it."""
    definition = (field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if definition is None or not definition.is_basic_field or definition.default_resolver is not getattr:
        return None  # a resolver, a field extension or permission (Strawberry's "basic field" has none)
    return _leaf_shape(definition.python_name, field.type)


def _leaf_shape(attribute: str, output: GraphQLOutputType) -> PlainField | None:
    nullable = not is_non_null_type(output)
    inner = get_nullable_type(output)
    if is_leaf_type(inner):
        return PlainField(attribute, _coercion(inner), nullable, is_list=False)
    if is_list_type(inner) and is_non_null_type(inner.of_type) and is_leaf_type(inner.of_type.of_type):
        return PlainField(attribute, _coercion(inner.of_type.of_type), nullable, is_list=True)
    return None


def _coercion(leaf: GraphQLLeafType) -> Callable[[Any], Any]:
    """`leaf.coerce_output_value`; for Strawberry's enums, a lookup of the member's name first: Strawberry's own
    compares the value with each of the enum's values in turn (a QC result's test type: up to 18 comparisons)."""
    coerce = leaf.coerce_output_value
    members = getattr(leaf, "wrapped_cls", None)
    if not isinstance(leaf, GraphQLEnumType) or members is None:
        return coerce
    names: dict[Any, str] = {}
    for name, value in leaf.values.items():  # the first name matching a member, as Strawberry's loop returns
        for member in members:
            if member.value == value.value:
                names.setdefault(member, name)

    def enum_name(value: Any) -> Any:
        return names[value] if type(value) is members and value in names else coerce(value)

    return enum_name


def call_resolvers_directly(schema: strawberry.Schema) -> strawberry.Schema:
    """Fields whose resolver is a plain function of the object (and `info`) — `nodes`, `qcResults`, `id`,
    `latestVersion` — called directly instead of through Strawberry's wrapper, which converts arguments there
    are none of, chains field extensions there are none of and builds a partial per call (~10 µs a field, ~75
    fields in a 20-dataset page). Root query fields with arguments are called directly too, their input objects
    converted once per value (`InputsKept`). Any other field with arguments or an async resolver, and any field
    with an extension or a permission, keeps Strawberry's own; schema extensions and middleware still wrap
    whatever resolves (graphql-core)."""
    if getattr(schema.schema_converter, "_exception_handler_specs", ()):
        return schema  # handlers turning exceptions into results live in Strawberry's wrapper
    info_class = schema.config.info_class
    query = schema._schema.query_type
    for named in schema._schema.type_map.values():
        if is_object_type(named):
            for field in named.fields.values():
                if named is query and field.args:
                    direct = _direct_resolver(field, info_class, InputsKept(field, schema))
                else:
                    direct = _direct_resolver(field, info_class)
                if direct is not None:
                    field.resolve = direct
    return schema


class InputsKept:
    """Strawberry's conversion of a query field's arguments, each input object's kept per value: converting a
    filter walks its input type field by field (~0.3 ms for one tissue filter, a tenth of a compiled page), and
    clients page through the same filter. Kept values are shared by requests: query resolvers only read them."""

    def __init__(self, field: GraphQLField, schema: strawberry.Schema, size: int = 256):
        definition = field.extensions[GraphQLCoreConverter.DEFINITION_BACKREF]
        config = schema.config
        self.arguments = {config.name_converter.from_argument(a): a for a in definition.arguments}
        self.convert = functools.partial(
            convert_argument, scalar_registry=schema.schema_converter.scalar_registry, config=config
        )
        self.kept: Kept[tuple, Any] = Kept(size)

    def __call__(self, values: dict[str, Any]) -> dict[str, Any]:
        converted = {}
        for name, value in values.items():
            argument = self.arguments[name]
            converted[argument.python_name] = self._converted(name, value, argument)
        return converted

    def _converted(self, name: str, value: Any, argument: Any) -> Any:
        # A scalar, an enum or a list is not worth keeping; a large input is converted each time rather than kept.
        asked = json.dumps(value, sort_keys=True, default=repr) if isinstance(value, dict) else None
        if asked is None or len(asked) > CACHED_TEXT:
            return self.convert(value, argument.type, path=(name,))
        kept = self.kept.get((name, asked))
        return (
            kept if kept is not None else self.kept.put((name, asked), self.convert(value, argument.type, path=(name,)))
        )


def _direct_resolver(field: GraphQLField, info_class: type, inputs: InputsKept | None = None) -> Callable | None:
    """A plain function of the object, or (with `inputs`) a query field with arguments, async or not."""
    definition = (field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    resolver = getattr(definition, "base_resolver", None)
    if resolver is None or definition.extensions or definition.permission_classes:
        return None
    if inputs is None and (definition.is_async or definition.arguments or field.args):
        return None
    function, takes_self = resolver.wrapped_func, resolver.self_parameter is not None
    info_name = resolver.info_parameter.name if resolver.info_parameter else None
    source_names = [p.name for p in (resolver.root_parameter, resolver.parent_parameter) if p is not None]

    def resolve(source: Any, info: Any, /, **arguments: Any) -> Any:  # an argument may be named `source` too
        kwargs = inputs(arguments) if inputs is not None else {}
        kwargs.update((name, source) for name in source_names)
        if info_name is not None:
            kwargs[info_name] = info_class(_raw_info=info, _field=definition)
        return function(source, **kwargs) if takes_self else function(**kwargs)

    return resolve


class PlainFieldsExecution(StrawberryGraphQLCoreExecutionContext):
    """Pass as `strawberry.Schema(execution_context_class=...)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # id of a grouped field set → (the set, kept alive so the id stays its own; its plain fields by name)
        self._plans: dict[int, tuple[dict, dict[str, PlainField]]] = {}
        self._direct = not (self.middleware_manager and self.middleware_manager.middlewares)
        if self._direct and hasattr(self.context_value, "completes_ahead"):
            self.context_value.completes_ahead = True  # resolvers may answer `Completed` values

    def complete_value(self, return_type, field_details_list, info, path, result, position_context):
        if type(result) is Completed:
            return result.value
        return super().complete_value(return_type, field_details_list, info, path, result, position_context)

    def _plain_fields(self, parent_type: GraphQLObjectType, grouped_field_set: dict) -> dict[str, PlainField]:
        plan = self._plans.get(id(grouped_field_set))
        if plan is None:
            plain = {}
            if self._direct:
                for response_name, details in grouped_field_set.items():
                    field = parent_type.fields.get(details[0].node.name.value)
                    shape = plain_field(field) if field is not None else None
                    if shape is not None:
                        plain[response_name] = shape
            plan = self._plans[id(grouped_field_set)] = (grouped_field_set, plain)
        return plan[1]

    def complete_list_value(self, return_type: GraphQLList, field_details_list, info, path, result, position_context):
        """A list of objects whose selected fields are all plain (a batch's QC results) is answered inline;
        anything else — or any item that does not read cleanly — goes through graphql-core's path."""
        answered = self._plain_objects(return_type, field_details_list, info, result, position_context)
        if answered is not None:
            return answered
        return super().complete_list_value(return_type, field_details_list, info, path, result, position_context)

    def _plain_objects(self, return_type: GraphQLList, field_details_list, info, result, position_context):
        item_type = get_nullable_type(return_type.of_type)
        if position_context is not None or not is_object_type(item_type) or not isinstance(result, list | tuple):
            return None
        grouped_field_set, defers, _ = self.collect_subfields(item_type, field_details_list)
        plain = self._plain_fields(item_type, grouped_field_set)
        if defers or len(plain) != len(grouped_field_set):
            return None
        is_type_of = item_type.is_type_of
        answered = []
        for item in result:
            if item is None or (is_type_of is not None and is_type_of(item, info) is not True):
                return None
            values = {}
            for response_name, shape in plain.items():
                value = values[response_name] = _read(shape, item)
                if value is Undefined:
                    return None
            answered.append(values)
        return answered

    def execute_fields(self, parent_type, source_value, path, grouped_field_set, position_context):
        plain = self._plain_fields(parent_type, grouped_field_set)
        if not plain:
            return super().execute_fields(parent_type, source_value, path, grouped_field_set, position_context)
        # graphql-core's loop (executor.execute_fields) with plain fields answered inline.
        results: dict[str, Any] = {}
        is_awaitable = self.is_awaitable
        awaitable_fields: list[str] = []
        try:
            for response_name, field_details_list in grouped_field_set.items():
                shape = plain.get(response_name)
                if shape is not None:
                    value = _read(shape, source_value)
                    if value is not Undefined:
                        results[response_name] = value
                        continue
                field_path = Path(path, response_name, parent_type.name)
                result = self.execute_field(parent_type, source_value, field_details_list, field_path, position_context)
                if result is not Undefined:
                    results[response_name] = result
                    if is_awaitable(result):
                        awaitable_fields.append(response_name)
        except Exception:
            if awaitable_fields:
                self.settle_in_background([results[field] for field in awaitable_fields])
            raise
        if not awaitable_fields:
            return results

        async def get_results() -> dict[str, Any]:
            awaited = await gather_with_cancel(*(results[field] for field in awaitable_fields))
            results.update(zip(awaitable_fields, awaited, strict=True))
            return results

        return get_results()


def _read(shape: PlainField, source: Any) -> Any:
    """The completed value, or Undefined to let graphql-core complete it (and report the error, if any)."""
    value = getattr(source, shape.attribute, Undefined)
    if value is None:
        return None if shape.nullable else Undefined
    if value is Undefined:
        return Undefined
    coerce = shape.coerce
    try:
        if shape.is_list:
            if not isinstance(value, list | tuple):
                return Undefined
            coerced = [coerce(item) for item in value]
            return Undefined if any(item is None or item is Undefined for item in coerced) else coerced
        coerced = coerce(value)
    except Exception:  # graphql-core reports it, with the field's path
        return Undefined
    return Undefined if coerced is None or coerced is Undefined else coerced
