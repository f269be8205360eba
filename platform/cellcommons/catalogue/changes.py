"""The change log: every create, update and delete of a catalogue record, read as this node's change feed.

Why a watermark and not the sequence alone: `seq` is taken when a row is inserted, not when its transaction
commits, so a slow transaction can commit seq 7 after a reader has already moved past seq 9. Each row therefore
also records its transaction id (`xid`, PostgreSQL's 64-bit xid8, which never wraps), and the feed is read in
(xid, seq) order, only below the reader's snapshot watermark `pg_snapshot_xmin(pg_current_snapshot())`: every
transaction with a lower xid has ended (committed and visible, or rolled back), and every transaction that has
yet to write gets a higher xid, so nothing can ever appear behind a cursor the feed handed out. The price is
latency, never loss: while any writing transaction of the cluster stays open, changes from later transactions
wait for it. Writers are never serialised.

Records are named by their GraphQL type and id. Harvested copies are logged with their origin node and left out
of this node's feed (their origin publishes them). Other institutions see a change with its record, except where
the record cannot tell, and `shared` keeps whether they may: deletes are tombstones (`shared`: whether they could
see the record when it went, since it is no longer there to ask), and a dataset they see changes mostly where
they cannot look, in its drafts and non_public versions (`shared`: the change published a version they see).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ColumnElement,
    DateTime,
    ForeignKey,
    Index,
    String,
    and_,
    cast,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, aliased, mapped_column

from cellcommons.access import visibility
from cellcommons.auth.principal import Principal
from cellcommons.catalogue.models import Batch, Collection, Dataset, Donor, Specification
from cellcommons.db import Base
from cellcommons.errors import InvalidInput

# The records the feed follows, by the name their global ids carry. A dataset's versions change as the dataset.
RECORDS: dict[str, type] = {
    "Donor": Donor,
    "Collection": Collection,
    "Specification": Specification,
    "Batch": Batch,
    "Dataset": Dataset,
}
RECORD_TYPES = {model: name for name, model in RECORDS.items()}

# The current transaction's id as a bigint (xid8 has no direct cast; its text form is the decimal number).
CURRENT_XID = "(pg_current_xact_id()::text)::bigint"
BIGINT_MAX = 2**63 - 1  # xid and seq are bigint columns


class Operation(StrEnum):
    create = "create"
    update = "update"
    delete = "delete"


class Change(Base):
    __tablename__ = "catalogue_change"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    xid: Mapped[int] = mapped_column(BigInteger, server_default=text(CURRENT_XID))
    record_type: Mapped[str] = mapped_column(String(40))
    record_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    institution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("institution.id", ondelete="RESTRICT"))
    operation: Mapped[str] = mapped_column(String(6))
    origin_node: Mapped[str] = mapped_column(String(80))
    shared: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_catalogue_change_xid_seq", "xid", "seq"),
        Index("ix_catalogue_change_record_id", "record_id"),
        CheckConstraint("operation IN ('create', 'update', 'delete')", name="operation_known"),
    )


async def record(session: AsyncSession, row: Any, operation: Operation, *, origin: str, shared: bool = False) -> None:
    """Log a change of `row` (flushed, so it has its id) in the caller's transaction; `shared` only counts for
    tombstones and datasets (see the module's docstring)."""
    await session.execute(
        insert(Change).values(
            record_type=RECORD_TYPES[type(row)],
            record_id=row.id,
            institution_id=row.institution_id,
            operation=operation.value,
            origin_node=origin,
            shared=shared,
        )
    )


# ---- reading the feed ------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Position:
    """Where a change sits in the feed; its cursor is this, base64url-encoded (see `cursor`)."""

    xid: int
    seq: int


def cursor(position: Position) -> str:
    """Plain (not sealed with the secret key): peers keep cursors as sync bookmarks, which must survive a key
    rotation, and a made-up cursor only skips changes its holder could read anyway."""
    return base64.urlsafe_b64encode(f"{position.xid}.{position.seq}".encode()).rstrip(b"=").decode()


def parse_cursor(value: str, field: str) -> Position:
    try:
        xid, seq = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode().split(".")
        position = Position(int(xid), int(seq))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("not a change-feed cursor", field=field) from None
    if not (0 <= position.xid <= BIGINT_MAX and 0 <= position.seq <= BIGINT_MAX):  # else the database refuses it
        raise InvalidInput("not a change-feed cursor", field=field)
    return position


@dataclass(frozen=True)
class FeedRequest:
    first: int | None = None
    after: Position | None = None
    last: int | None = None
    before: Position | None = None


@dataclass(frozen=True)
class FeedPage:
    changes: list[Change]
    has_next: bool
    has_previous: bool


def _watermark() -> ColumnElement:
    """The oldest transaction still running when the statement's snapshot was taken."""
    xmin = func.pg_snapshot_xmin(func.pg_current_snapshot())
    return cast(cast(xmin, String), BigInteger)


def _record_visible(principal: Principal | None) -> ColumnElement[bool]:
    """The record still exists and the policy lets the principal see it."""
    checks = []
    for name, model in RECORDS.items():
        entity = aliased(model)
        seen = exists().where(entity.id == Change.record_id, visibility.VISIBLE[model](principal, entity))
        checks.append(and_(Change.record_type == name, seen))
    return or_(*checks)


def visible_changes(principal: Principal | None) -> ColumnElement[bool]:
    """Members see their institution's every change; others the changes of records they may see (of a dataset,
    only those that published a version they see), and the tombstones of records they could see when they were
    deleted."""
    if principal is None:
        return false()
    shown_with_record = or_(Change.record_type != RECORD_TYPES[Dataset], Change.shared)
    return or_(
        Change.institution_id == principal.institution_id,
        and_(Change.operation != Operation.delete.value, shown_with_record, _record_visible(principal)),
        and_(Change.operation == Operation.delete.value, Change.shared),
    )


def _feed_query(principal: Principal | None, node_id: str):
    return select(Change).where(Change.origin_node == node_id, Change.xid < _watermark(), visible_changes(principal))


async def read_feed(session: AsyncSession, principal: Principal | None, node_id: str, request: FeedRequest) -> FeedPage:
    """One page of this node's changes the principal may see, in (xid, seq) order, never past the watermark."""
    key = tuple_(Change.xid, Change.seq)
    query = _feed_query(principal, node_id)
    if request.after is not None:
        query = query.where(key > tuple_(request.after.xid, request.after.seq))
    if request.before is not None:
        query = query.where(key < tuple_(request.before.xid, request.before.seq))
    forward = request.last is None
    size = request.first if forward else request.last
    order = (Change.xid, Change.seq) if forward else (Change.xid.desc(), Change.seq.desc())
    rows = list((await session.scalars(query.order_by(*order).limit(size + 1))).all())
    more = len(rows) > size
    rows = rows[:size]
    if forward:
        return FeedPage(rows, has_next=more, has_previous=request.after is not None)
    rows.reverse()
    return FeedPage(rows, has_next=request.before is not None, has_previous=more)


async def count_feed(session: AsyncSession, principal: Principal | None, node_id: str) -> int:
    query = _feed_query(principal, node_id).with_only_columns(func.count())
    return await session.scalar(query)


def position(change: Change) -> Position:
    return Position(change.xid, change.seq)
