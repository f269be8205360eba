"""How errors leave the GraphQL endpoint: domain errors keep their message and code everywhere; anything
unexpected says only "internal error" in production (the original is still logged by Strawberry's
`process_errors`, which runs before this); field suggestions ("Did you mean …") are off in production,
since they let a caller map a schema whose introspection is disabled (validation runs here for that, and is
cached per document).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from graphql import DocumentNode, GraphQLError, GraphQLSchema, validate
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from cellcommons.errors import CellCommonsError

INTERNAL_MESSAGE = "internal error"

# The rules Strawberry appends to every validation (strawberry.schema.schema.validate_document).
_STRAWBERRY_RULES = (MaybeNullValidationRule, OneOfInputValidationRule)


def format_error(error: GraphQLError, *, production: bool) -> GraphQLError:
    """The error as a client may see it: a stable `extensions.code`, and nothing internal in production."""
    original = error.original_error
    # No original: GraphQL's own syntax/validation errors and these limits' refusals, already fit to show.
    # A GraphQLError raised on purpose (e.g. Strawberry's permission classes) is fit as well.
    if original is None or isinstance(original, GraphQLError):
        return error
    if isinstance(original, CellCommonsError):
        details = {k: v for k, v in original.as_dict().items() if k != "message"}
        return _replace(error, original.message, details)
    if production:
        return _replace(error, INTERNAL_MESSAGE, {"code": "internal"})
    return _replace(error, error.message, {**(error.extensions or {}), "code": "internal"})


def _replace(error: GraphQLError, message: str, extensions: dict) -> GraphQLError:
    return GraphQLError(
        message,
        error.nodes,
        error.source,
        error.positions,
        error.path,
        original_error=None,  # nothing below the response may leak through formatters or tracing
        extensions=extensions,
    )


class ErrorPolicy(SchemaExtension):
    """Applies `format_error` to every error of the result."""

    def __init__(self, *, production: bool):
        self.production = production

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [format_error(e, production=self.production) for e in result.errors]


class CachedValidation(SchemaExtension):
    """Runs validation itself, once per distinct document (Strawberry's ParserCache hands back the same document
    for the same query text, and a client repeats a handful of queries), without "Did you mean …" suggestions
    where `hide_suggestions`; Strawberry then skips its own run."""

    def __init__(self, *, hide_suggestions: bool):
        self.hide_suggestions = hide_suggestions

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        # The graphql-core schema, as Strawberry's own ValidationCache reads it.
        found = _validate(context.schema._schema, Same(context.graphql_document), tuple(context.validation_rules),
                          self.hide_suggestions)  # fmt: skip
        context.pre_execution_errors = list(found)
        yield


class Same:
    """A document as a cache key by identity: a document's own hash walks every node of it, on every request."""

    __slots__ = ("document",)

    def __init__(self, document: DocumentNode):
        self.document = document

    def __hash__(self) -> int:
        return id(self.document)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Same) and other.document is self.document


@functools.lru_cache(maxsize=256)  # keeps each key, and so its document, alive: an id is not reused meanwhile
def _validate(schema: GraphQLSchema, document: Same, rules: tuple, hide_suggestions: bool) -> tuple:
    return tuple(validate(schema, document.document, (*rules, *_STRAWBERRY_RULES), hide_suggestions=hide_suggestions))
