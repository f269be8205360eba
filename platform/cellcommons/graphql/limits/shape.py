"""Limits on the query text and its shape, checked before validation finishes: length, tokens, depth, aliases,
fields.

Fragments are expanded where they are spread, so a fragment's aliases and fields count every time it is used;
each fragment is measured once (memoised), so measuring stays linear in the document even when fragments are
spread many times. Introspection fields (`__schema`, `__type`, `__typename`) are leaves here: graphql-core's
MaxIntrospectionDepthRule bounds introspection.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSyntaxError,
    InlineFragmentNode,
    Lexer,
    OperationDefinitionNode,
    SelectionNode,
    SelectionSetNode,
    Source,
    TokenKind,
    ValidationRule,
)
from strawberry.extensions import SchemaExtension

from cellcommons.graphql.limits.config import CACHED_TEXT, Limits, limit_error


@dataclass(frozen=True)
class Shape:
    depth: int = 0
    aliases: int = 0
    fields: int = 0


_EMPTY = Shape()


def _combine(shapes: Iterator[Shape]) -> Shape:
    depth = aliases = fields = 0
    for shape in shapes:
        depth, aliases, fields = max(depth, shape.depth), aliases + shape.aliases, fields + shape.fields
    return Shape(depth, aliases, fields)


class ShapeMeter:
    """Measures selection sets of one document, fragments expanded."""

    def __init__(self, document: DocumentNode):
        self._fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        self._measured: dict[str, Shape] = {}
        self._open: set[str] = set()

    def selection_set(self, node: SelectionSetNode | None) -> Shape:
        return _combine(self._selection(s) for s in node.selections) if node else _EMPTY

    def _selection(self, node: SelectionNode) -> Shape:
        if isinstance(node, FieldNode):
            return self._field(node)
        if isinstance(node, InlineFragmentNode):
            return self.selection_set(node.selection_set)
        return self._spread(node.name.value)

    def _field(self, node: FieldNode) -> Shape:
        inner = _EMPTY if node.name.value.startswith("__") else self.selection_set(node.selection_set)
        return Shape(inner.depth + 1, inner.aliases + (node.alias is not None), inner.fields + 1)

    def _spread(self, name: str) -> Shape:
        # Unknown fragments and cycles count as nothing: the specified rules report them.
        if name in self._measured or name in self._open or name not in self._fragments:
            return self._measured.get(name, _EMPTY)
        self._open.add(name)
        self._measured[name] = self.selection_set(self._fragments[name].selection_set)
        self._open.discard(name)
        return self._measured[name]


def shape_errors(shape: Shape, limits: Limits, node: OperationDefinitionNode) -> Iterator[GraphQLError]:
    if shape.depth > limits.max_depth:
        yield limit_error(
            "query_too_deep",
            f"the query is {shape.depth} fields deep; the limit is {limits.max_depth}",
            node,
            depth=shape.depth,
            limit=limits.max_depth,
        )
    if shape.aliases > limits.max_aliases:
        yield limit_error(
            "too_many_aliases",
            f"the query uses {shape.aliases} aliases; the limit is {limits.max_aliases}",
            node,
            aliases=shape.aliases,
            limit=limits.max_aliases,
        )
    if shape.fields > limits.max_fields:
        yield limit_error(
            "query_too_large",
            f"the query selects {shape.fields} fields once fragments are expanded; the limit is {limits.max_fields}",
            node,
            fields=shape.fields,
            limit=limits.max_fields,
        )


def shape_rule(limits: Limits) -> type[ValidationRule]:
    """A graphql-core validation rule checking every operation of the document against `limits`."""

    class QueryShapeRule(ValidationRule):
        def enter_document(self, node: DocumentNode, *_args: object) -> None:
            meter = ShapeMeter(node)
            for operation in node.definitions:
                if isinstance(operation, OperationDefinitionNode):
                    for error in shape_errors(meter.selection_set(operation.selection_set), limits, operation):
                        self.report_error(error)

    return QueryShapeRule


def has_more_tokens(text: str, limit: int) -> bool:
    """Whether `text` holds more than `limit` lexical tokens; stops reading at limit + 1. Worked out once per text
    a client repeats (up to CACHED_TEXT characters)."""
    return _counted(text, limit) if len(text) <= CACHED_TEXT else _count(text, limit)


def _count(text: str, limit: int) -> bool:
    lexer = Lexer(Source(text))
    try:
        for _ in range(limit + 1):
            if lexer.advance().kind is TokenKind.EOF:
                return False
    except GraphQLSyntaxError:
        return False  # the parser reports it, with its position
    return True


_counted = functools.lru_cache(maxsize=256)(_count)  # as many texts as the parser cache keeps parsed


class TextLimit(SchemaExtension):
    """Refuses long query texts before the parser builds a tree for them: first by length, which costs nothing,
    then by tokens, which costs a pass of the lexer."""

    def __init__(self, max_chars: int, max_tokens: int):
        self.max_chars = max_chars
        self.max_tokens = max_tokens

    def on_parse(self) -> Iterator[None]:
        query = self.execution_context.query
        # Strawberry turns an error raised here into the response's only error.
        if query and len(query) > self.max_chars:
            raise limit_error(
                "query_too_long",
                f"the query is {len(query)} characters long; the limit is {self.max_chars}",
                length=len(query),
                limit=self.max_chars,
            )
        if query and has_more_tokens(query, self.max_tokens):
            raise limit_error(
                "too_many_tokens",
                f"the query has more than {self.max_tokens} tokens",
                limit=self.max_tokens,
            )
        yield
