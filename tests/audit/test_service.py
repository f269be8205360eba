import asyncio
import hashlib
import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from cellcommons.audit.models import GENESIS_HASH, AuditChainHead, AuditEvent
from cellcommons.audit.service import append, record
from cellcommons.audit.verify import verify
from cellcommons.db import Database, make_engine
from cellcommons.errors import InvalidInput


async def _head(session):
    return (await session.execute(select(AuditChainHead.seq, AuditChainHead.hash))).one()


def _expected_hash(prev_hash, event):
    # The documented formula, written out independently of the service's helpers.
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()


async def test_appends_form_a_chain_from_the_genesis_hash_with_the_documented_canonical_hash(session):
    first = await append(
        session,
        actor="user:alice@lumc",
        institution="lumc",
        action="batch.create",
        target="batch:7c0e",
        details={"lot": "MSC-2024-017", "donor": "Pseudonym Ünal", "viability": 93.5},
    )
    second = await append(session, actor="system:seed", action="dataset.publish", outcome="denied")

    assert (first.id, first.prev_hash) == (1, GENESIS_HASH)
    assert first.occurred_at.tzinfo is not None
    assert first.hash == _expected_hash(
        GENESIS_HASH,
        {
            "seq": 1,
            "occurred_at": first.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor": "user:alice@lumc",
            "institution": "lumc",
            "action": "batch.create",
            "target": "batch:7c0e",
            "outcome": "success",
            "details": {"lot": "MSC-2024-017", "donor": "Pseudonym Ünal", "viability": 93.5},
        },
    )
    assert (second.id, second.prev_hash, second.outcome) == (2, first.hash, "denied")
    assert second.details == {} and second.institution is None and second.target is None
    assert tuple(await _head(session)) == (2, second.hash)
    # The returned event is the session's own persistent object: flushing writes nothing twice.
    await session.flush()
    assert await session.get(AuditEvent, 1) is first


async def test_details_that_jsonb_would_rewrite_still_verify_after_the_round_trip(session):
    awkward = {
        "big float": 1.2345678901234567e25,
        "exponent": 1e16,
        "tiny": 1.5e-7,
        "negative zero": -0.0,
        "big int": 2**80,
        "tuple": (1, "two"),
        "nested": {"z": [None, True, {"ß": "東京"}], "a": 0.1},
    }
    await append(session, actor="client:redcap-sync", action="sync.run", details=awkward)
    session.expire_all()
    stored = (await session.execute(select(AuditEvent.details))).scalar_one()
    assert stored["big int"] == 2**80 and stored["tuple"] == [1, "two"] and stored["nested"]["z"][2] == {"ß": "東京"}
    result = await verify(session)
    assert result.intact, result.summary()


@pytest.mark.parametrize(
    ("details", "reason"),
    [
        ({"when": datetime(2024, 1, 1)}, "datetime is not JSON"),
        ({"raw": b"\x00"}, "bytes is not JSON"),
        ({"set": {1, 2}}, "set is not JSON"),
        ({"ratio": float("nan")}, "nan is not a JSON number"),
        ({"deep": [1, {"x": float("inf")}]}, r"details\.deep\[1\]\.x: inf"),
        ({1: "int key"}, "keys must be strings"),
        ({"nul": "a\x00b"}, "NUL character"),
        ({"bad": "\ud800"}, "lone surrogate"),
        (["not", "an", "object"], "must be a JSON object"),
    ],
)
async def test_details_that_are_not_json_are_refused_and_nothing_is_appended(session, details, reason):
    with pytest.raises(InvalidInput, match=reason) as refused:
        await append(session, actor="user:bob@umcu", action="batch.update", details=details)
    assert refused.value.field == "details"
    assert tuple(await _head(session)) == (0, GENESIS_HASH)


@pytest.mark.parametrize(
    ("field", "arguments"),
    [
        ("outcome", {"outcome": "maybe"}),
        ("actor", {"actor": "alice"}),
        ("actor", {"actor": "user:alice smith"}),
        ("action", {"action": "Batch Create"}),
        ("institution", {"institution": "LUMC Leiden"}),
        ("target", {"target": ""}),
    ],
)
async def test_other_invalid_fields_are_refused_by_name(session, field, arguments):
    with pytest.raises(InvalidInput) as refused:
        await append(session, **({"actor": "user:alice@lumc", "action": "batch.create"} | arguments))
    assert refused.value.field == field


async def _owner_creates_table(settings):
    owner = make_engine(settings.owner_url)
    async with owner.begin() as conn:
        await conn.execute(text("CREATE TABLE audited_thing (id int PRIMARY KEY)"))
    await owner.dispose()


async def test_the_event_lives_and_dies_with_the_callers_transaction(fresh_settings):
    await _owner_creates_table(fresh_settings)
    database = Database(fresh_settings)
    try:
        with pytest.raises(RuntimeError):
            async with database.unit_of_work() as session:
                await session.execute(text("INSERT INTO audited_thing VALUES (1)"))
                await append(session, actor="user:alice@lumc", action="batch.create", target="batch:1")
                raise RuntimeError("the action failed after its event was appended")
        with pytest.raises(InvalidInput):
            async with database.unit_of_work() as session:
                await session.execute(text("INSERT INTO audited_thing VALUES (2)"))
                await append(session, actor="user:alice@lumc", action="batch.create", details={"x": object()})
        async with database.unit_of_work() as session:
            await session.execute(text("INSERT INTO audited_thing VALUES (3)"))
            kept = await append(session, actor="user:alice@lumc", action="batch.create", target="batch:3")
        async with database.unit_of_work() as session:
            assert (await session.execute(text("SELECT id FROM audited_thing"))).scalars().all() == [3]
            assert (await session.execute(select(AuditEvent.id, AuditEvent.target))).all() == [(1, "batch:3")]
            assert tuple(await _head(session)) == (1, kept.hash)
    finally:
        await database.dispose()


async def test_concurrent_writers_on_separate_connections_never_fork_the_chain(fresh_settings):
    writers, each = 8, 25

    async def writer(number):
        database = Database(fresh_settings)  # an engine, and so a connection, of its own
        try:
            for i in range(each):
                async with database.unit_of_work() as session:
                    await append(session, actor=f"client:writer-{number}", action="sync.record", details={"i": i})
        finally:
            await database.dispose()

    await asyncio.gather(*(writer(n) for n in range(writers)))

    database = Database(fresh_settings)
    try:
        async with database.unit_of_work() as session:
            result = await verify(session)
            per_actor = dict(
                (await session.execute(text("SELECT actor, count(*) FROM audit_event GROUP BY actor"))).all()
            )
            # The time is taken under the chain head's lock, so it never runs backwards along the chain.
            times = (await session.scalars(select(AuditEvent.occurred_at).order_by(AuditEvent.id))).all()
    finally:
        await database.dispose()
    assert result.intact, result.summary()
    assert result.count == result.head_seq == writers * each
    assert per_actor == {f"client:writer-{n}": each for n in range(writers)}
    assert times == sorted(times)


async def test_record_appends_the_same_chained_event_without_an_orm_object(session):
    first = await append(session, actor="user:alice@lumc", action="batch.create")
    issued = await record(
        session,
        actor="user:bob@lumc",
        institution="lumc",
        action="file.download_url_issued",
        target="distribution:1",
        details={"expires_in": 300, "files": [{"file_name": "Ünal.csv"}]},
    )
    with pytest.raises(InvalidInput):  # validated exactly as append validates
        await record(session, actor="nobody", action="file.download_url_issued")
    assert (issued.seq, issued.prev_hash) == (first.id + 1, first.hash)
    assert tuple(await _head(session)) == (issued.seq, issued.hash)
    assert not [o for o in session.identity_map.values() if isinstance(o, AuditEvent) and o.id == issued.seq]
    stored = await session.get(AuditEvent, issued.seq)
    assert (stored.action, stored.details["files"][0]["file_name"], stored.hash) == (
        "file.download_url_issued",
        "Ünal.csv",
        issued.hash,
    )
    assert stored.hash == _expected_hash(
        first.hash,
        {
            "seq": issued.seq,
            "occurred_at": issued.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor": "user:bob@lumc",
            "institution": "lumc",
            "action": "file.download_url_issued",
            "target": "distribution:1",
            "outcome": "success",
            "details": {"expires_in": 300, "files": [{"file_name": "Ünal.csv"}]},
        },
    )
