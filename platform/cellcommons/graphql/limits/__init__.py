"""Protection for the GraphQL endpoint, independent of the schema it guards.

`protection(settings)` returns the Strawberry extensions to pass to `strawberry.Schema(..., extensions=...)`:

- the query text: more than `max_query_chars` characters → `query_too_long`, before anything reads it; more than
  `max_tokens` tokens → `too_many_tokens`, before parsing builds anything;
- its shape (a validation rule): `query_too_deep`, `too_many_aliases` (through fragments and inline fragments,
  once per spread), `query_too_large` (fields after expanding fragments);
- its cost, after validation and variable coercion, before any resolver: every `...Connection` field must give
  `first` or `last` (`connection_size_required`), at most `max_page_size` (`page_size_too_large`), and the whole
  query at most `max_query_cost` nodes (`query_too_costly`);
- the principal's rolling budget (`budget_exhausted`); every response carries
  `extensions.cost = {requested, remaining, resetAt}`;
- errors: domain errors keep message and code; anything else is "internal error" in production; introspection
  and "Did you mean …" suggestions are off in production;
- parsing and validation run once per distinct query text (bounded LRU caches), not once per request.

The context object must have `principal` (a `Principal` or None) and `client_host` (the caller's address).
"""

from __future__ import annotations

from functools import partial

from graphql import NoSchemaIntrospectionCustomRule
from strawberry.extensions import AddValidationRules, ParserCache

from cellcommons.graphql.limits.body import BodySizeLimit
from cellcommons.graphql.limits.budget import Balance, Budget, principal_key
from cellcommons.graphql.limits.config import Limits
from cellcommons.graphql.limits.errors import CachedValidation, ErrorPolicy, format_error
from cellcommons.graphql.limits.guard import CostGuard, PriceList
from cellcommons.graphql.limits.shape import TextLimit, shape_rule
from cellcommons.settings import Environment, Settings

PARSED_DOCUMENTS = 256  # distinct query texts kept parsed (and validated) per process

__all__ = ["Balance", "BodySizeLimit", "Budget", "Limits", "format_error", "principal_key", "protection"]


def protection(settings: Settings, limits: Limits = Limits(), *, budget: Budget | None = None) -> list:  # noqa: B008
    """Extension factories (one instance per request) for `strawberry.Schema(extensions=...)`.

    One budget per schema unless given: build the schema once per process so every request shares it.
    """
    production = settings.environment is Environment.production
    budget = budget or Budget(limits.budget_points, limits.budget_window)
    rules = [shape_rule(limits)]
    if production:
        rules.append(NoSchemaIntrospectionCustomRule)
    return [
        partial(ErrorPolicy, production=production),
        # Before the parser cache: a long text is refused unparsed.
        partial(TextLimit, limits.max_query_chars, limits.max_tokens),
        partial(ParserCache, maxsize=PARSED_DOCUMENTS),
        partial(AddValidationRules, rules),
        partial(CostGuard, budget, PriceList(limits, hide_suggestions=production)),
        partial(CachedValidation, hide_suggestions=production),
    ]
