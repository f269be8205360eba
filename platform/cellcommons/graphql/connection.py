"""Relay connections with keyset cursors (Strawberry's ListConnection pages by offset, which shifts under inserts).

Top-level connections page in SQL (`reading.keyset_page`); nested ones (a dataset version's batches) page over
the rows their DataLoader fetched for the whole level, with the same cursors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import strawberry
from sqlalchemy import Select
from strawberry.types.nodes import SelectedField

from cellcommons.catalogue import reading
from cellcommons.catalogue.models import Batch
from cellcommons.errors import InvalidInput

Node = TypeVar("Node")


@strawberry.type
class SealedCursor:
    """An edge's cursor, sealed only when asked for (AES-GCM per edge): a page of nodes rarely needs them all."""

    position: strawberry.Private[Any]
    seal: strawberry.Private[Callable[[Any], str]]
    sealed: strawberry.Private[str | None]

    @strawberry.field
    def cursor(self) -> str:
        if self.sealed is None:
            self.sealed = self.seal(self.position)
        return self.sealed


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    first: strawberry.Private[SealedCursor | None]
    last: strawberry.Private[SealedCursor | None]

    @strawberry.field
    def start_cursor(self) -> str | None:
        return self.first.cursor() if self.first else None

    @strawberry.field
    def end_cursor(self) -> str | None:
        return self.last.cursor() if self.last else None


@strawberry.type
class Edge(SealedCursor, Generic[Node]):
    node: Node


@strawberry.type
class Connection(Generic[Node]):
    edges: list[Edge[Node]]
    page_info: PageInfo
    _total: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="How many nodes the whole connection has, for this caller.")
    async def total_count(self) -> int:
        return await self._total()

    @strawberry.field(description="The nodes of this page, without cursors.")
    def nodes(self) -> list[Node]:
        return [edge.node for edge in self.edges]


def check_page_size(first: int | None, last: int | None) -> None:
    """Exactly one of `first` and `last`, from 0 to the largest page (catalogue pages and the change feed)."""
    if (first is None) == (last is None):
        raise InvalidInput("give exactly one of first or last", field="first")
    size, name = (first, "first") if first is not None else (last, "last")
    if not 0 <= size <= reading.MAX_PAGE:
        raise InvalidInput(f"must be between 0 and {reading.MAX_PAGE}", field=name)


def page_request(
    ids, first: int | None, after: str | None, last: int | None, before: str | None
) -> reading.PageRequest:
    check_page_size(first, last)
    return reading.PageRequest(
        first=first,
        last=last,
        after=ids.parse_cursor(after, "after") if after else None,
        before=ids.parse_cursor(before, "before") if before else None,
    )


def _connection(ids, rows: Sequence[Any], cursors: Sequence[reading.Cursor], to_node, has_next, has_previous, total):
    edges = [
        Edge(position=c, seal=ids.cursor, sealed=None, node=to_node(row)) for row, c in zip(rows, cursors, strict=True)
    ]
    return Connection(edges=edges, page_info=page_info(edges, has_next, has_previous), _total=total)


def page_info(edges: Sequence[Edge], has_next: bool, has_previous: bool) -> PageInfo:
    return PageInfo(
        has_next_page=has_next,
        has_previous_page=has_previous,
        first=edges[0] if edges else None,
        last=edges[-1] if edges else None,
    )


async def sql_connection(context, query: Select, model: Any, request: reading.PageRequest, to_node) -> Connection:
    page = await context.read(reading.keyset_page, query, model, request)

    async def total() -> int:
        return await context.read(reading.count, query)

    return _connection(context.ids, page.rows, page.cursors, to_node, page.has_next, page.has_previous, total)


def list_connection(
    context, rows: Sequence[Any], request: reading.PageRequest, to_node, model: Any = Batch
) -> Connection:
    """Page already-loaded rows of `model` (ordered by created_at, id) exactly as SQL would; a version's batches
    are the only nested connection so far."""
    name = reading.creation_order(model).name
    after = reading.checked_cursor(request.after, name, "after")
    before = reading.checked_cursor(request.before, name, "before")
    key = lambda row: (row.created_at, row.id)  # noqa: E731
    window = [r for r in rows if (after is None or key(r) > after.key) and (before is None or key(r) < before.key)]
    if request.first is not None:
        page, has_next, has_previous = window[: request.first], len(window) > request.first, request.after is not None
    else:
        start = max(len(window) - (request.last or 0), 0)
        page, has_next, has_previous = window[start:], request.before is not None, start > 0

    async def total() -> int:
        return len(rows)

    cursors = [reading.Cursor(name, (row.created_at,), row.id) for row in page]
    return _connection(context.ids, page, cursors, to_node, has_next, has_previous, total)


NODES = (("nodes",), ("edges", "node"))  # where a connection's nodes are selected


def nodes_select(info: strawberry.Info, field: str) -> bool:
    """Whether the nodes of the connection being resolved (`nodes { … }` or `edges { node { … } }`) ask for
    `field`, through fragments too; worked out once per place in the query per request, not once per parent."""
    place = (field, *((p.key, p.typename) for p in _path(info.path) if isinstance(p.key, str)))
    known = info.context.lookahead
    if place not in known:
        known[place] = any(selects(info, (*nodes, field)) for nodes in NODES)
    return known[place]


def selects(info: strawberry.Info, path: tuple[str, ...]) -> bool:
    """Whether the field being resolved selects `path` (field names, through fragments too)."""
    return any(True for f in info.selected_fields for _ in _selected(f.selections, path))


def selected_arguments(info: strawberry.Info, path: tuple[str, ...]) -> list[dict]:
    """The arguments of each selection of `path` under the field being resolved (variables filled in)."""
    return [selected.arguments for f in info.selected_fields for selected in _selected(f.selections, path)]


def _path(path) -> list:
    steps = []
    while path is not None:
        steps.append(path)
        path = path.prev
    return steps


def _selected(selections: list, path: tuple[str, ...]) -> Iterator[SelectedField]:
    for selection in selections:
        if not isinstance(selection, SelectedField):  # a fragment spread or an inline fragment
            yield from _selected(selection.selections, path)
        elif selection.name == path[0]:
            if len(path) == 1:
                yield selection
            else:
                yield from _selected(selection.selections, path[1:])
