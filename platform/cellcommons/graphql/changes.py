"""The change feed: `changes(after:, first:)` lists every create, update and delete of the records this node is
the origin of, as the caller may see them, in an order a follower never misses a late commit in (the watermark
is explained in `catalogue/changes.py`). Peers harvest it with a machine-client token; each change names its
record, which the follower fetches in the same query (`record`, null for tombstones)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from cellcommons.catalogue import changes, reading
from cellcommons.graphql.connection import Connection, Edge, PageInfo, SealedCursor, check_page_size
from cellcommons.graphql.types import Institution, Node, as_node

ChangeOperation = strawberry.enum(changes.Operation, name="ChangeOperation")


@strawberry.type(description="One create, update or delete (a tombstone) of a record this node is the origin of.")
class Change:
    row: strawberry.Private[changes.Change]
    operation: ChangeOperation
    record_type: str = strawberry.field(description="The record's GraphQL type: Donor, Collection, Batch, …")
    changed_at: datetime

    @classmethod
    def of(cls, row: changes.Change) -> Change:
        operation = changes.Operation(row.operation)
        return cls(row=row, operation=operation, record_type=row.record_type, changed_at=row.changed_at)

    @strawberry.field(description="The record's global id (the same as `record.id` while it exists)")
    def record_id(self, info: strawberry.Info) -> strawberry.ID:
        return strawberry.ID(info.context.ids.global_id(self.row.record_type, self.row.record_id))

    @strawberry.field(description="The owning institution")
    async def institution(self, info: strawberry.Info) -> Institution | None:
        row = await info.context.row(reading.NODE_MODELS["Institution"], self.row.institution_id)
        return Institution.of(row) if row else None

    @strawberry.field(
        description="The record as it is now; null for a tombstone, a record deleted since, or a type without a node"
    )
    async def record(self, info: strawberry.Info) -> Node | None:
        model = reading.NODE_MODELS.get(self.row.record_type)
        if model is None or self.operation is changes.Operation.delete:
            return None
        row = await info.context.row(model, self.row.record_id)
        if row is None:
            return None
        return as_node(info, self.row.record_type, row)


def feed_request(first: int | None, after: str | None, last: int | None, before: str | None) -> changes.FeedRequest:
    check_page_size(first, last)
    return changes.FeedRequest(
        first=first,
        last=last,
        after=changes.parse_cursor(after, "after") if after else None,
        before=changes.parse_cursor(before, "before") if before else None,
    )


@strawberry.type
class ChangesQuery:
    @strawberry.field(
        description="This node's change feed, oldest first. Keep `pageInfo.endCursor` and ask again with "
        "`after:` it; an empty page means nothing new yet (changes of transactions still open appear later, "
        "never behind your cursor). Cursors stay valid across restarts."
    )
    async def changes(
        self,
        info: strawberry.Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Change]:
        context = info.context
        request = feed_request(first, after, last, before)
        node_id = context.settings.node_id
        page = await context.read(changes.read_feed, context.principal, node_id, request)
        edges = [
            Edge(position=changes.position(row), seal=changes.cursor, sealed=None, node=Change.of(row))
            for row in page.changes
        ]
        # An empty page keeps the caller where it was, so following the feed is always `after: endCursor`.
        start = edges[0] if edges else _given(before)
        end = edges[-1] if edges else _given(after)

        async def total() -> int:
            return await context.read(changes.count_feed, context.principal, node_id)

        info_ = PageInfo(has_next_page=page.has_next, has_previous_page=page.has_previous, first=start, last=end)
        return Connection(edges=edges, page_info=info_, _total=total)


def _given(cursor: str | None) -> SealedCursor | None:
    """A cursor the client sent, handed back as it came (already sealed: its `seal` is never called)."""
    return SealedCursor(position=None, seal=str, sealed=cursor) if cursor else None
