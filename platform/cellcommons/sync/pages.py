"""Landing one page of records: validate each, collapse duplicates, upsert the winners, apply tombstones.

Runs inside the caller's transaction (the runtime commits the page together with its bookmark). The ledger
keeps, per natural key, the source timestamp and a hash of the last version applied (or a tombstone mark), so:
- a record or tombstone applies when the key is new, or when it is strictly newer than what was applied;
  equal timestamps keep the first version (in a page too), so replaying pages changes nothing;
- identical content writes nothing but the ledger's time when it is newer (as does a repeated tombstone), so an
  older version arriving later in the stream cannot win;
- without source timestamps the source's order is all there is: a later record overwrites. Replay is exact
  for streams that carry their replication key.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.errors import ValidationFailed
from cellcommons.sync import repository
from cellcommons.sync.sdk import Record
from cellcommons.sync.targets import Checked, Scope

TOMBSTONE = "tombstone"  # the ledger's content hash for a key whose record was deleted
TURN = 25  # records validated between two turns of the event loop (about a millisecond)
KEY_LENGTH = 200  # the ledger's record_key column


@dataclass
class Rejected:
    record: Record
    key: str | None
    errors: list[dict[str, Any]]


@dataclass
class PageOutcome:
    read: int = 0
    upserted: int = 0
    deleted: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    landed: set[str] = field(default_factory=set)  # keys written, deleted or already up to date


@dataclass
class PageWork:
    """The target, scope and ledger coordinates a page lands under."""

    target: Any
    scope: Scope
    source_id: uuid.UUID
    stream: str
    snapshot_pass: uuid.UUID | None = None


def _newest(records: list[tuple[Record, str, Checked | None]]) -> list[tuple[Record, str, Checked | None]]:
    """Collapse in-page duplicates by key: the newer source timestamp wins; on a tie, the later record."""
    chosen: dict[str, tuple[Record, str, Checked | None]] = {}
    for entry in records:
        held = chosen.get(entry[1])
        if held is None or _supersedes(entry[0], held[0].updated_at):
            chosen[entry[1]] = entry
    return list(chosen.values())


def _stamp(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _supersedes(record: Record, held: datetime | None) -> bool:
    """Strictly newer than what is held; without a timestamp on either side, the later one wins."""
    if record.updated_at is None or held is None:
        return True
    return _stamp(record.updated_at) > _stamp(held)


@dataclass
class CheckedPage:
    """A page validated (pure work, no database: it may run while the previous page lands)."""

    outcome: PageOutcome
    accepted: list[tuple[Record, str, Checked | None]]


async def check_page_between(work: PageWork, records: list[Record]) -> CheckedPage:
    """Validate a page's records and collapse duplicates, giving the event loop a turn every few records: run as
    a task, it validates the next page in the gaps while the previous page's statements execute in PostgreSQL.
    (A thread would not overlap: the validation holds the GIL, and the landing waits up to a switch interval to
    get it back after every round trip, which made the pipeline slower than no overlap at all.)"""
    page = CheckedPage(PageOutcome(read=len(records)), [])
    for start in range(0, len(records), TURN):
        for record in records[start : start + TURN]:
            _check(work, record, page)
        await asyncio.sleep(0)
    page.accepted = _newest(page.accepted)
    return page


def _check(work: PageWork, record: Record, page: CheckedPage) -> None:
    key = work.target.key_of(record.data)
    unusable = _unusable_key(work.target, key)
    if unusable is not None:  # neither the ledger nor a lookup could hold it: a finding, not a failed page
        page.outcome.rejected.append(Rejected(record, None, [unusable]))
        return
    if record.findings:  # met while reading it (an unreadable timestamp)
        page.outcome.rejected.append(Rejected(record, key, list(record.findings)))
        return
    if record.deleted:
        if key is None:
            page.outcome.rejected.append(Rejected(record, None, [_missing_key(work.target)]))
        else:
            page.accepted.append((record, key, None))
        return
    try:
        page.accepted.append((record, key, work.target.check(record.data, work.scope)))
    except ValidationFailed as exc:
        page.outcome.rejected.append(Rejected(record, key, [f.model_dump(mode="json") for f in exc.findings]))


async def land_page(session: AsyncSession, work: PageWork, page: CheckedPage) -> PageOutcome:
    outcome, accepted = page.outcome, page.accepted
    stored = await repository.ledger(session, work.source_id, work.stream, [key for _, key, _ in accepted])
    await _upserts(session, work, [e for e in accepted if e[2] is not None], stored, outcome)
    await _tombstones(session, work, [e for e in accepted if e[2] is None], stored, outcome)
    return outcome


def _later(record: Record, held: datetime | None) -> bool:
    """The record carries a source timestamp newer than the one held (or the first one for the key)."""
    return record.updated_at is not None and (held is None or _stamp(record.updated_at) > _stamp(held))


async def _upserts(session: AsyncSession, work: PageWork, entries: list, stored: dict, outcome: PageOutcome) -> None:
    changed, unchanged, restamped = [], [], []
    for record, key, checked in entries:
        if key not in stored or (stored[key][1] != checked.content_hash and _supersedes(record, stored[key][0])):
            changed.append((record, checked))
            continue
        unchanged.append(key)
        if stored[key][1] == checked.content_hash and _later(record, stored[key][0]):
            # The same content, newer at the source: nothing to write but the ledger's timestamp, which an older
            # tombstone (later in the stream) must not beat.
            restamped.append(_entry(work, key, record, checked.content_hash))
    written = await work.target.upsert(session, work.scope, [checked for _, checked in changed])
    for record, checked in changed:
        if checked.key not in written:
            outcome.rejected.append(Rejected(record, checked.key, [_harvested(work.target, checked.key)]))
    applied = [_entry(work, c.key, r, c.content_hash) for r, c in changed if c.key in written]
    await repository.remember(session, work.source_id, work.stream, applied + restamped, stored)
    if work.snapshot_pass is not None:
        await repository.mark_seen(session, work.source_id, work.stream, unchanged, work.snapshot_pass)
    outcome.upserted += len(written)
    outcome.landed |= written | set(unchanged)


async def _tombstones(session: AsyncSession, work: PageWork, entries: list, stored: dict, outcome: PageOutcome) -> None:
    # A tombstone not newer than what was applied is stale (the record came back to life at the source since).
    live = [
        (record, key)
        for record, key, _ in entries
        if key not in stored or (stored[key][1] != TOMBSTONE and _supersedes(record, stored[key][0]))
    ]
    # Deleted again, later: the ledger keeps the later time, which an older version of the record must not beat.
    restamped = [
        _entry(work, key, record, TOMBSTONE)
        for record, key, _ in entries
        if key in stored and stored[key][1] == TOMBSTONE and _later(record, stored[key][0])
    ]
    deleted, refused = await work.target.delete(session, work.scope, [key for _, key in live])
    for record, key in live:
        if key in refused:
            outcome.rejected.append(Rejected(record, key, [_undeletable(work.target, key)]))
    # Remembered, not forgotten: replaying an older version of the record must not bring it back.
    applied = [(record, key) for record, key in live if key not in refused]
    entries_applied = [_entry(work, key, record, TOMBSTONE) for record, key in applied]
    await repository.remember(session, work.source_id, work.stream, entries_applied + restamped, stored)
    outcome.deleted += len(deleted)
    outcome.landed |= {key for _, key in applied} | {
        key for _, key, _ in entries if stored.get(key, ("", ""))[1] == TOMBSTONE
    }


def _entry(work: PageWork, key: str, record: Record, content_hash: str) -> dict[str, Any]:
    """A ledger entry: what was applied for `key`, and the source time it was current at."""
    return {"record_key": key, "source_updated_at": record.updated_at, "content_hash": content_hash,
            "snapshot_pass": work.snapshot_pass}  # fmt: skip


def _finding(code: str, field_name: str, message: str) -> dict[str, Any]:
    return {"code": code, "severity": "error", "field": field_name, "message": message}


def _unusable_key(target, key: str | None) -> dict[str, Any] | None:
    """A finding when the natural key could not be stored in the ledger or sent to PostgreSQL at all."""
    if key is None:
        return None
    name = target.natural_key[0]
    if len(key) > KEY_LENGTH:
        return _finding("too_long", name, f"{name} has {len(key)} characters; a key has at most {KEY_LENGTH}")
    if "\x00" in key or _has_surrogate(key):
        return _finding("invalid_value", name, f"{name} contains a NUL character or a lone surrogate")
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _missing_key(target) -> dict[str, Any]:
    names = ", ".join(target.natural_key)
    return _finding("missing", target.natural_key[0], f"a tombstone needs its natural key ({names})")


def _harvested(target, key: str) -> dict[str, Any]:
    message = f"{target.name} {key!r} is held by another origin (a copy harvested from another node, or a local "
    message += "record a harvest may not overwrite); only its origin changes it"
    return _finding("harvested_copy", target.natural_key[0], message)


def _undeletable(target, key: str) -> dict[str, Any]:
    message = f"{target.name} {key!r} cannot be deleted: a dataset links it, or it is another node's copy"
    return _finding("delete_refused", target.natural_key[0], message)
