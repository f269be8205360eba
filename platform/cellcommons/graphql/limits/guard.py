"""The extension that prices each operation, charges the principal's budget, and refuses before execution."""

from __future__ import annotations

from collections.abc import Iterator

from graphql import ExecutionResult, GraphQLError
from strawberry.extensions import SchemaExtension

from cellcommons.graphql.limits.budget import Budget, principal_key
from cellcommons.graphql.limits.config import Limits, limit_error
from cellcommons.graphql.limits.cost import measure
from cellcommons.observability import metrics


class CostGuard(SchemaExtension):
    """One instance per request (pass a factory to Strawberry); the budget is shared by all of them."""

    def __init__(self, limits: Limits, budget: Budget, *, hide_suggestions: bool):
        self.limits = limits
        self.budget = budget
        self.hide_suggestions = hide_suggestions
        self.requested = 0

    def on_execute(self) -> Iterator[None]:
        refusal = self._admit()
        if refusal:
            # Strawberry does not call the executor when the result is already set.
            self.execution_context.result = ExecutionResult(data=None, errors=refusal)
        yield

    def get_results(self) -> dict[str, object]:
        # Also called for responses refused at parsing or validation: then nothing was requested.
        balance = self.budget.balance(principal_key(self.execution_context.context))
        return {"cost": balance.as_dict(self.requested)}

    def _admit(self) -> list[GraphQLError]:
        context = self.execution_context
        measurement = measure(
            context.schema._schema,  # the graphql-core schema, as Strawberry's own extensions read it
            context.graphql_document,
            context.operation_name,
            context.variables,
            self.limits,
            hide_suggestions=self.hide_suggestions,
        )
        self.requested = measurement.cost
        metrics.graphql_cost(context.operation_name, measurement.cost)
        if measurement.errors:
            return measurement.errors
        admitted, balance = self.budget.try_spend(principal_key(context.context), measurement.cost)
        if admitted:
            return []
        return [
            limit_error(
                "budget_exhausted",
                f"the query costs {measurement.cost} points and {balance.remaining} are left until the budget "
                "refills; retry later or ask for smaller pages",
                **balance.as_dict(measurement.cost),
            )
        ]
