"""Appending to the audit log, and the hash that chains its events.

An event's hash is SHA-256 over the previous event's hash (64 lowercase hex characters, ASCII) followed by the
canonical event: UTF-8 JSON with sorted keys, no whitespace, non-ASCII characters kept as they are, over
seq, occurred_at (ISO 8601, UTC, microseconds, "Z"), actor, institution, action, target, outcome and details.
The first event's previous hash is 64 zeros.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from cellcommons.audit.models import AuditEvent, Outcome
from cellcommons.db import DriverStatement
from cellcommons.errors import InvalidInput

ACTOR = re.compile(r"(user|client|system):[^\s\x00-\x1f\x7f]{1,248}")
ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
INSTITUTION = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
MAX_TARGET = 255
MAX_ACTION = 100


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(
    prev_hash: str,
    *,
    seq: int,
    occurred_at: datetime,
    actor: str,
    institution: str | None,
    action: str,
    target: str | None,
    outcome: str,
    details: Mapping[str, Any],
) -> str:
    event = {
        "seq": seq,
        "occurred_at": timestamp(occurred_at),
        "actor": actor,
        "institution": institution,
        "action": action,
        "target": target,
        "outcome": outcome,
        "details": details,
    }
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(event)).hexdigest()


class Appended(NamedTuple):
    """What `record` gives back: the event's place in the chain."""

    seq: int
    occurred_at: datetime
    prev_hash: str
    hash: str


async def append(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    outcome: str = Outcome.success,
    institution: str | None = None,
    target: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction (flushed, not committed).

    The chain head stays locked until the caller's transaction ends, so appends from every connection form
    one chain; append as late in the transaction as the action allows. Callers running at REPEATABLE READ
    or SERIALIZABLE get a serialisation failure when another append committed first, and retry.
    """
    fields = _validated(actor, action, outcome, institution, target, details)
    appended = await _appended(session, fields)
    event = AuditEvent(
        id=appended.seq, occurred_at=appended.occurred_at, prev_hash=appended.prev_hash, hash=appended.hash, **fields
    )
    make_transient_to_detached(event)  # as if loaded: adding it to the session emits no second INSERT
    session.add(event)
    return event


async def record(session: AsyncSession, **event: Any) -> Appended:
    """`append`, with the same keywords, for callers that need no ORM object back (URL issuance, the hottest
    audited action): the same event in the same chain, without the event joining the session."""
    return await _appended(session, _validated(**event))


async def _appended(session: AsyncSession, fields: dict[str, Any]) -> Appended:
    # One round trip: the server-side `audit_append` (migration 0014) locks the head, takes the time under the
    # lock, hashes the event from the canonical JSON pieces, inserts it and moves the head. On the driver: URL
    # issuance appends hundreds of times a second and SQLAlchemy's per-execution work costs more than the
    # function does (bench download).
    [row] = await _APPEND.rows(session, **fields, **_canonical_pieces(fields))
    return Appended(*row)


_APPEND = DriverStatement(
    text(
        "SELECT event_id, event_at, event_prev_hash, event_hash FROM audit_append("
        ":actor, :institution, :action, :target, :outcome, :details, :before_time, :before_seq, :after_seq)"
    ).bindparams(bindparam("details", type_=JSONB)),
    writes=True,
)


def _canonical_pieces(fields: Mapping[str, Any]) -> dict[str, str]:
    """The event's canonical JSON (`event_hash`) in the three pieces around occurred_at and seq, which the
    database fills in under the chain-head lock. Sorted keys put them between institution and target."""
    before = canonical_json({k: fields[k] for k in ("action", "actor", "details", "institution")})
    return {
        "before_time": before[:-1].decode() + ',"occurred_at":"',
        "before_seq": '","outcome":' + canonical_json(fields["outcome"]).decode() + ',"seq":',
        "after_seq": ',"target":' + canonical_json(fields["target"]).decode() + "}",
    }


def _validated(
    actor: str,
    action: str,
    outcome: str = Outcome.success,
    institution: str | None = None,
    target: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    if not isinstance(actor, str) or not ACTOR.fullmatch(actor):
        raise InvalidInput("must be 'user:…', 'client:…' or 'system:…' without spaces", field="actor")
    _check_text(actor, "actor")
    if not isinstance(action, str) or len(action) > MAX_ACTION or not ACTION.fullmatch(action):
        raise InvalidInput("must be dotted lowercase words such as 'batch.create'", field="action")
    if outcome not in set(Outcome):
        raise InvalidInput(f"must be one of {', '.join(Outcome)}", field="outcome")
    if institution is not None and (not isinstance(institution, str) or not INSTITUTION.fullmatch(institution)):
        raise InvalidInput("must be an institution slug (lowercase letters, digits, '-' or '_')", field="institution")
    if target is not None and (not isinstance(target, str) or not 0 < len(target) <= MAX_TARGET):
        raise InvalidInput(f"must be a non-empty string of at most {MAX_TARGET} characters", field="target")
    if target is not None:
        _check_text(target, "target")
    if details is None:
        details = {}
    if not isinstance(details, Mapping):
        raise InvalidInput("must be a JSON object", field="details")
    return {
        "actor": actor,
        "action": action,
        "outcome": str(Outcome(outcome)),
        "institution": institution,
        "target": target,
        "details": _stored_form(details, "details"),
    }


def _stored_form(value: Any, path: str) -> Any:
    """`value` as JSON that PostgreSQL's jsonb gives back unchanged, so the hash verifies after a round trip;
    raises InvalidInput naming the first part that is not JSON."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _stored_float(value, path)
    if isinstance(value, str):
        _check_text(value, path)
        return value
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{path}: keys must be strings, got {type(key).__name__}", field="details")
            _check_text(key, f"{path}.{key}")
            result[key] = _stored_form(item, f"{path}.{key}")
        return result
    if isinstance(value, list | tuple):
        return [_stored_form(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise InvalidInput(f"{path}: {type(value).__name__} is not JSON", field="details")


def _stored_float(value: float, path: str) -> float | int:
    if not math.isfinite(value):
        raise InvalidInput(f"{path}: {value} is not a JSON number", field="details")
    if value == 0:
        return 0.0  # jsonb has no negative zero
    # Python writes floats from 1e16 up in exponent form; jsonb stores the exact decimal and gives back an int.
    if "e+" in repr(value):
        return int(Decimal(repr(value)))
    return value


def _check_text(value: str, path: str) -> None:
    field = path.split(".", 1)[0].split("[", 1)[0]
    if "\x00" in value:
        raise InvalidInput(f"{path}: contains a NUL character", field=field)
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidInput(f"{path}: is not valid Unicode (lone surrogate)", field=field) from None
