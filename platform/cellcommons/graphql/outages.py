"""GraphQL answers 503 with code `unavailable` when the database or object storage went down mid-query.

Strawberry turns a resolver's exception into an entry of `errors` with HTTP 200. For an outage that would read
"internal error" and look like a bug; this extension names the outage instead (the error policy then renders
it like any domain error) and sets the HTTP status, so clients and load balancers retry.
"""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from cellcommons.outages import unavailable_from


class OutageStatus(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is None or not result.errors:
            return
        result.errors = [_named(error) for error in result.errors]
        if any(_is_outage(error) for error in result.errors):
            response = getattr(self.execution_context.context, "response", None)
            if response is not None:
                response.status_code = 503


def _is_outage(error: GraphQLError) -> bool:
    return error.original_error is not None and unavailable_from(error.original_error) is not None


def _named(error: GraphQLError) -> GraphQLError:
    original = error.original_error
    outage = unavailable_from(original) if original is not None else None
    if outage is None or outage is original:
        return error
    return GraphQLError(error.message, error.nodes, error.source, error.positions, error.path, original_error=outage)
