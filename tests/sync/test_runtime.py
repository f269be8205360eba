"""The runtime against PostgreSQL: resume after a crash, quarantine, newer-wins, tombstones, snapshots."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from tests.sync.conftest import batch_record, memory_connector

from cellcommons.audit.models import AuditEvent
from cellcommons.catalogue.models import Batch
from cellcommons.sync.models import QuarantinedRecord, RunStatus, RunTrigger, SyncBookmark, SyncRun


class Crash(Exception):
    """Stands for the process dying between two pages."""


async def test_a_crash_between_pages_resumes_without_loss_or_duplicates(env):
    rows = [batch_record(f"LOT-{i:04d}") for i in range(500)]
    crashed = []

    def crash_once_at_page_three(offset):
        if offset == 200 and not crashed:
            crashed.append(offset)
            raise Crash("killed")

    runtime = env.runtime(memory_connector(rows, before_page=crash_once_at_page_three))
    await env.add_source()
    first = await runtime.run("lims")
    assert first.status is RunStatus.failed and "Crash: killed" in first.error
    assert len(await env.lots()) == 200  # two pages committed with their bookmark, nothing of the third
    assert (await env.scalar(select(SyncBookmark.value))) == {"offset": 200}

    second = await runtime.run("lims")
    assert second.status is RunStatus.ok
    assert (second.read_count, second.upserted_count) == (300, 300)  # it resumed, re-reading nothing
    assert await env.lots() == sorted(r["lot_number"] for r in rows)


async def test_one_malformed_record_among_a_thousand_is_quarantined_and_the_rest_lands(env):
    rows = [batch_record(f"LOT-{i:04d}") for i in range(1000)]
    rows[537] = batch_record("LOT-0537", cell_type="bone marrow MSC")
    await env.add_source()
    run = await env.runtime(memory_connector(rows)).run("lims")

    assert run.status is RunStatus.partial
    assert (run.read_count, run.upserted_count, run.quarantined_count) == (1000, 999, 1)
    assert len(await env.lots()) == 999 and "LOT-0537" not in await env.lots()
    async with env.database.unit_of_work() as session:
        (held,) = (await session.scalars(select(QuarantinedRecord))).all()
        events = (await session.scalars(select(AuditEvent).where(AuditEvent.action == "sync.run"))).all()
    assert held.run_id == run.id and held.record_key == "LOT-0537"
    assert held.payload["cell_type"] == "bone marrow MSC"  # the raw payload, as read
    assert [e["field"] for e in held.errors] == ["cell_type"]
    assert events[-1].details["status"] == "partial" and events[-1].details["quarantined"] == 1


async def test_quarantine_replay_lands_records_once_fixed_and_keeps_the_others(env):
    rows = [batch_record("LOT-1"), batch_record("LOT-2", passage=-1)]
    await env.add_source()
    runtime = env.runtime(memory_connector(rows))
    await runtime.run("lims")
    still_wrong = await runtime.replay_quarantine("lims")
    assert (still_wrong.status, still_wrong.read_count, still_wrong.upserted_count, still_wrong.quarantined_count) == (
        RunStatus.partial, 1, 0, 1,
    )  # fmt: skip
    async with env.database.unit_of_work() as session:
        held = await session.scalar(select(QuarantinedRecord))
        held.payload = {**held.payload, "passage": 4}  # as if the mapping or the source were fixed
    fixed = await runtime.replay_quarantine("lims")
    assert (fixed.status, fixed.trigger, fixed.upserted_count, fixed.quarantined_count) == (
        RunStatus.ok, RunTrigger.replay, 1, 0,
    )  # fmt: skip
    assert await env.lots() == ["LOT-1", "LOT-2"]
    async with env.database.unit_of_work() as session:
        runs = (await session.scalars(select(SyncRun.trigger).order_by(SyncRun.created_at))).all()
        events = (await session.scalars(select(AuditEvent).where(AuditEvent.action == "sync.run"))).all()
    assert runs == [RunTrigger.manual, RunTrigger.replay, RunTrigger.replay]
    assert [e.details["trigger"] for e in events] == ["manual", "replay", "replay"]


async def test_newer_source_timestamp_wins_and_in_page_duplicates_collapse(env):
    rows = [
        batch_record("LOT-1", product_name="BM-MSC v2", modified="2026-01-02T00:00:00+00:00"),
        batch_record("LOT-1", product_name="BM-MSC v1", modified="2026-01-01T00:00:00+00:00"),
        batch_record("LOT-1", product_name="BM-MSC v3", modified="2025-12-01T00:00:00+00:00"),
    ]
    await env.add_source()
    run = await env.runtime(memory_connector(rows, page_size=2)).run("lims")
    assert run.status is RunStatus.ok
    # Page one collapses to v2; v3 in page two is older than what is stored, so it is read and skipped.
    assert await env.scalar(select(Batch.product_name)) == "BM-MSC v2"
    assert (run.read_count, run.upserted_count) == (3, 1)


async def test_tombstones_delete_and_a_stale_tombstone_does_not(env):
    rows = [
        batch_record("LOT-1", modified="2026-01-01T00:00:00+00:00"),
        batch_record("LOT-2", modified="2026-01-05T00:00:00+00:00"),
    ]
    await env.add_source()
    await env.runtime(memory_connector(rows)).run("lims")
    stones = [
        {"lot_number": "LOT-1", "_deleted": True, "modified": "2026-01-02T00:00:00+00:00"},
        {"lot_number": "LOT-2", "_deleted": True, "modified": "2026-01-03T00:00:00+00:00"},  # older than LOT-2
    ]
    run = await env.runtime(memory_connector(rows + stones)).run("lims")
    assert run.deleted_count == 1
    assert await env.lots() == ["LOT-2"]


async def test_a_snapshot_deletes_what_is_absent_only_after_a_complete_pass(env):
    await env.add_source()
    everything = [batch_record(f"LOT-{i}") for i in range(6)]
    await env.runtime(memory_connector(everything, page_size=2, full_snapshot=True)).run("lims")

    def crash(offset):
        if offset == 2:
            raise RuntimeError("connection lost")

    fewer = everything[:2] + everything[3:]  # LOT-2 is gone at the source
    failed = await env.runtime(memory_connector(fewer, page_size=2, full_snapshot=True, before_page=crash)).run("lims")
    assert failed.status is RunStatus.failed
    assert len(await env.lots()) == 6  # an incomplete pass deletes nothing

    done = await env.runtime(memory_connector(fewer, page_size=2, full_snapshot=True)).run("lims")
    assert done.status is RunStatus.ok and done.deleted_count == 1
    assert "LOT-2" not in await env.lots() and len(await env.lots()) == 5


async def test_a_record_harvested_from_another_node_is_not_overwritten(env):
    await env.add_source()
    await env.runtime(memory_connector([batch_record("LOT-1")])).run("lims")
    async with env.database.unit_of_work() as session:
        (await session.scalar(select(Batch))).origin_node = "peer-node"
    changed = memory_connector([batch_record("LOT-1", product_name="BM-MSC changed")])
    run = await env.runtime(changed).run("lims", from_bookmarks={})  # read the source from its start again
    assert run.status is RunStatus.partial and run.upserted_count == 0
    assert await env.scalar(select(Batch.product_name)) == "BM-MSC lot LOT-1"


async def test_an_unknown_source_is_a_clear_error(env):
    from cellcommons.errors import NotFound

    with pytest.raises(NotFound, match="no sync source 'nope'"):
        await env.runtime(memory_connector([])).run("nope")
    assert await env.count(SyncRun) == 0
