"""The extension that prices each operation, charges the principal's budget, and refuses before execution."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from graphql import ExecutionResult, GraphQLError
from strawberry.extensions import SchemaExtension

from cellcommons.graphql.kept import Kept
from cellcommons.graphql.limits.budget import Budget, principal_key
from cellcommons.graphql.limits.config import CACHED_TEXT, Limits, limit_error
from cellcommons.graphql.limits.cost import Measurement, measure
from cellcommons.observability import metrics


class PriceList:
    """What the queries a process has priced cost, by query text, operation and variables: pricing walks the
    whole document (a tenth of a small page's time), and clients repeat a few queries. Refusals are not kept, nor
    texts and variables longer than CACHED_TEXT."""

    def __init__(self, limits: Limits, *, hide_suggestions: bool, size: int = 256):
        self.limits = limits
        self.hide_suggestions = hide_suggestions
        self._kept: Kept[tuple, Measurement] = Kept(size)

    def price(self, schema: Any, document: Any, text: str, operation_name: str | None, variables: Any) -> Measurement:
        asked = json.dumps(variables, sort_keys=True, default=repr)
        key = (id(schema), text, operation_name, asked)
        kept = self._kept.get(key)
        if kept is not None:
            return kept
        measured = measure(
            schema, document, operation_name, variables, self.limits, hide_suggestions=self.hide_suggestions
        )
        if not measured.errors and len(text) + len(asked) <= CACHED_TEXT:
            self._kept.put(key, measured)
        return measured


class CostGuard(SchemaExtension):
    """One instance per request (pass a factory to Strawberry); the budget and price list are shared by all."""

    def __init__(self, budget: Budget, prices: PriceList):
        self.budget = budget
        self.prices = prices
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
        measurement = self.prices.price(
            context.schema._schema,  # the graphql-core schema, as Strawberry's own extensions read it
            context.graphql_document,
            context.query,
            context.operation_name,
            context.variables,
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
