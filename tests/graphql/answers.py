"""Comparing GraphQL answers: cursors opened, and how much an answer holds."""

from __future__ import annotations

from cellcommons.graphql.ids import Identifiers


def opened(value, ids: Identifiers):
    """The answer with each sealed cursor opened: sealing draws a fresh nonce, the position it seals does not."""
    if isinstance(value, dict):
        return {
            k: ids.parse_cursor(v, k) if k in ("cursor", "startCursor", "endCursor") and v else opened(v, ids)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [opened(v, ids) for v in value]
    return value


def leaves(value) -> int:
    """How many non-null values an answer holds: an answer with something in it makes equality mean something."""
    if isinstance(value, dict):
        return sum(leaves(v) for v in value.values())
    if isinstance(value, list):
        return sum(leaves(v) for v in value)
    return value is not None
