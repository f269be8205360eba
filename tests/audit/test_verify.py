import json
import subprocess

import pytest
from sqlalchemy import text
from tests.processes import cli_environment

from cellcommons.audit.models import GENESIS_HASH, AuditEvent
from cellcommons.audit.service import append, event_hash
from cellcommons.audit.verify import verify, verify_database, write_checkpoint
from cellcommons.db import Database, make_engine
from cellcommons.demo.stack import create_database, drop_database, unique_name
from cellcommons.errors import Unavailable
from cellcommons.storage import ObjectStore


async def _append_committed(settings, count):
    database = Database(settings)
    try:
        for i in range(count):
            async with database.unit_of_work() as session:
                await append(session, actor="user:alice@lumc", action="batch.update", details={"step": i})
    finally:
        await database.dispose()


async def _tamper(settings, *statements):
    """What a superuser with direct database access could do: switch the triggers off and rewrite rows."""
    owner = make_engine(settings.owner_url)
    try:
        async with owner.begin() as conn:
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await owner.dispose()


def _cli(settings, *args):
    env = cli_environment(settings)
    return subprocess.run(
        ["cellcommons", "audit", "verify", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def test_an_empty_log_is_intact(session):
    result = await verify(session)
    assert (result.intact, result.count, result.head_seq, result.head_hash) == (True, 0, 0, GENESIS_HASH)


async def test_a_chain_longer_than_one_streamed_batch_is_intact(session):
    events = [await append(session, actor="system:seed", action="batch.create", details={"n": n}) for n in range(7)]
    result = await verify(session, batch=2)
    assert result.intact, result.summary()
    assert (result.count, result.head_seq, result.head_hash) == (7, 7, events[-1].hash)


async def test_the_command_says_intact_and_exits_0(fresh_settings):
    await _append_committed(fresh_settings, 3)
    result = _cli(fresh_settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [result.stdout.strip()]
    assert result.stdout.startswith("audit chain intact: 3 events, head seq 3, hash ")


async def test_a_superuser_edit_of_one_event_is_named_by_the_command(fresh_settings):
    await _append_committed(fresh_settings, 6)
    await _tamper(fresh_settings, "UPDATE audit_event SET details = '{\"step\": 40}' WHERE id = 4")
    result = _cli(fresh_settings)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "audit chain BROKEN at seq 4 (event id 4): its stored hash does not match its contents "
        "(altered after it was written); 3 events before it verified"
    ]


async def test_a_deleted_event_in_the_middle_is_found(fresh_settings):
    await _append_committed(fresh_settings, 6)
    await _tamper(fresh_settings, "DELETE FROM audit_event WHERE id = 3")
    result = await verify_database(fresh_settings)
    assert (result.intact, result.broken_seq, result.broken_id, result.count) == (False, 3, 4, 2)
    assert result.problem == "event 3 missing: the next event present is id 4"


async def test_an_event_rewritten_with_a_fresh_hash_breaks_the_next_link(fresh_settings):
    await _append_committed(fresh_settings, 4)
    database = Database(fresh_settings)
    async with database.unit_of_work() as session:
        original = await session.get(AuditEvent, 2)
    await database.dispose()
    fields = {k: getattr(original, k) for k in ("occurred_at", "actor", "institution", "action", "target", "outcome")}
    forged = event_hash(original.prev_hash, seq=2, details={"step": 99}, **fields)
    await _tamper(
        fresh_settings, f"UPDATE audit_event SET details = '{{\"step\": 99}}', hash = '{forged}' WHERE id = 2"
    )
    result = await verify_database(fresh_settings)
    assert (result.broken_seq, result.broken_id, result.count) == (3, 3, 2)
    assert result.problem == f"prev_hash {original.hash} does not match the hash of seq 2 ({forged})"


async def test_dropping_the_last_events_is_caught_by_the_head(fresh_settings):
    await _append_committed(fresh_settings, 5)
    await _tamper(fresh_settings, "DELETE FROM audit_event WHERE id >= 4")
    result = await verify_database(fresh_settings)
    assert (result.intact, result.broken_seq, result.count) == (False, 4, 3)
    assert "the chain head says seq 5" in result.problem and "event 4 onwards missing" in result.problem


async def test_a_checkpoint_of_an_intact_chain_lands_in_the_audit_bucket(fresh_settings):
    await _append_committed(fresh_settings, 2)
    result = _cli(fresh_settings, "--checkpoint")
    assert result.returncode == 0, result.stderr
    verified = await verify_database(fresh_settings)
    bucket = fresh_settings.bucket("audit")
    key = result.stdout.strip().rsplit(f"checkpoint {bucket}/", 1)[1]
    store = ObjectStore.from_settings(fresh_settings)
    try:
        body = json.loads(b"".join(store.get_stream(bucket, key)))
        assert {k: body[k] for k in ("count", "head_seq", "head_hash")} == {
            "count": 2,
            "head_seq": 2,
            "head_hash": verified.head_hash,
        }
        assert body["verified_at"].endswith("Z")
    finally:
        store.delete(bucket, key)
        store.client.remove_bucket(bucket)


def test_a_broken_chain_is_never_checkpointed(object_store, bucket):
    from cellcommons.audit.verify import Verification

    broken = Verification(1, 2, GENESIS_HASH, broken_seq=2, broken_id=2, problem="edited")
    with pytest.raises(ValueError, match="only an intact chain"):
        write_checkpoint(object_store, bucket, broken)
    assert list(object_store.client.list_objects(bucket, recursive=True)) == []


async def test_a_database_without_the_audit_tables_says_to_migrate(stack):
    name = unique_name("cc_unmigrated")
    create_database(stack.admin_url, name)
    try:
        with pytest.raises(Unavailable, match=r"no audit log in the database at .*: run `cellcommons migrate`"):
            await verify_database(stack.settings_for(name))
    finally:
        drop_database(stack.admin_url, name)


async def test_an_unreachable_database_gives_one_line_and_exit_1(settings):
    unreachable = settings.model_copy(update={"database_url": "postgresql://owner@127.0.0.1:1/cellcommons"})
    with pytest.raises(Unavailable, match=r"cannot reach the database at 127\.0\.0\.1:1/cellcommons"):
        await verify_database(unreachable)
    result = _cli(unreachable)
    assert result.returncode == 1
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: cannot reach the database at 127.0.0.1:1/cellcommons")
