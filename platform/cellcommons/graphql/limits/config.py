"""The numbers that bound one GraphQL request and one principal's hourly spend."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from graphql import GraphQLError, Node


@dataclass(frozen=True)
class Limits:
    max_depth: int = 10  # fields on the longest path from the root: `{ a { b } }` is 2
    max_aliases: int = 30  # counted once per place a fragment is spread
    # Characters of the query text, checked before anything reads it: lexing skips comments one at a time, so a
    # body's megabyte of `#` lines took half a second before the token limit could refuse it. The largest query
    # of graphql_schema/operations/ is under 2 000 characters, as is graphql-core's introspection query; the
    # longest text an argument takes (a 20 000-character description, inlined instead of a variable) fits three
    # times. Lexing this many characters of comments costs a few hundredths of a second.
    max_query_chars: int = 65_536
    max_tokens: int = 5_000  # lexical tokens of the query text, comments excluded
    # Fields once every fragment spread is expanded: keeps a small query with reused fragments from
    # expanding into millions of fields (which the cost walk and execution would both visit).
    max_fields: int = 2_000
    max_page_size: int = 100  # `first` / `last` of one connection
    max_query_cost: int = 50_000  # nodes one query may ask for
    aggregate_cost: int = 100  # a count or facet over every row a connection finds: priced like a full page
    budget_points: int = 500_000  # cost points per principal per rolling window
    budget_window: timedelta = timedelta(hours=1)
    max_body_bytes: int = 1_048_576  # for BodySizeLimit in front of /graphql


# Caches keyed by what a client sent (query texts, variables, input values) keep an entry only up to this size:
# 256 entries of a body's megabyte each would pin a quarter of a gigabyte per worker.
CACHED_TEXT = 16_384  # characters


def limit_error(code: str, message: str, nodes: Node | list[Node] | None = None, **details: object) -> GraphQLError:
    """A refusal clients can branch on: a stable `extensions.code` and the numbers behind it."""
    return GraphQLError(message, nodes, extensions={"code": code, **details})
