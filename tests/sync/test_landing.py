"""How a page's batches land: lots new to the institution by COPY, lots it holds by upsert, a lot another writer
creates while the page lands (the page fails as a whole and lands again as an update), and the page read ahead."""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg
from sqlalchemy import select
from tests.sync.conftest import batch_record, memory_connector, recorder

from cellcommons.catalogue.changes import Change
from cellcommons.catalogue.enums import ReleaseStatus
from cellcommons.catalogue.models import Batch, QcResult
from cellcommons.catalogue.schemas import BatchIn
from cellcommons.sync.models import QuarantinedRecord, RunStatus, RunTrigger
from cellcommons.sync.resilience import RetryPolicy
from cellcommons.sync.sdk import Connector, Page, Stream


def _owner_url(env) -> str:
    return env.settings.database_url.replace("postgresql+psycopg://", "postgresql://")


async def _changes(env) -> list[tuple[str, str]]:
    async with env.database.unit_of_work() as session:
        rows = await session.execute(
            select(Batch.lot_number, Change.operation).join(Change, Change.record_id == Batch.id).order_by(Change.seq)
        )
        return [tuple(row) for row in rows]


async def test_new_and_held_lots_in_one_page_land_once_each_with_their_change_log_entries(env):
    async with env.database.unit_of_work() as session:  # a lot the institution registered before any sync
        session.add(Batch(institution_id=env.institution_id, origin_node=env.settings.node_id, lot_number="LOT-1",
                          product_name="registered by hand", cell_type="CL:0002540", tissue="UBERON:0002371",
                          release_status=ReleaseStatus.quarantine))  # fmt: skip
    async with env.database.unit_of_work() as session:
        held_id = await session.scalar(select(Batch.id))
    results = [{"test_type": "viability", "timepoint": "post_thaw", "status": "final", "value": "91", "unit": "%"}]
    rows = [batch_record("LOT-1", qc_results=results), batch_record("LOT-2", qc_results=results)]
    await env.add_source()

    run = await env.runtime(memory_connector(rows)).run("lims")

    assert (run.status, run.upserted_count) == (RunStatus.ok, 2)
    async with env.database.unit_of_work() as session:
        batches = {b.lot_number: b for b in await session.scalars(select(Batch))}
        results_of = dict((await session.execute(select(QcResult.batch_id, QcResult.value))).all())
    assert sorted(batches) == ["LOT-1", "LOT-2"]
    assert batches["LOT-1"].id == held_id and batches["LOT-1"].product_name == "BM-MSC lot LOT-1"
    assert set(results_of) == {held_id, batches["LOT-2"].id}  # both got their QC result
    assert await _changes(env) == [("LOT-2", "create"), ("LOT-1", "update")]


class OtherWriter(threading.Thread):
    """Another writer inserting LOT-1 without committing, until the sync's COPY of LOT-1 waits on it: the sync
    could not see the lot when it looked, and PostgreSQL holds its COPY on the other transaction's index entry."""

    def __init__(self, env):
        super().__init__(daemon=True)
        self.env, self.inserted, self.saw_the_wait = env, threading.Event(), False

    def run(self) -> None:
        with psycopg.connect(_owner_url(self.env)) as other:
            other.execute(
                "INSERT INTO batch (id, institution_id, origin_node, lot_number, product_name, cell_type, tissue,"
                " release_status) VALUES (gen_random_uuid(), %s, %s, 'LOT-1', 'by another writer', 'CL:0002540',"
                " 'UBERON:0002371', 'quarantine')",
                (self.env.institution_id, self.env.settings.node_id),
            )
            self.inserted.set()
            deadline = time.monotonic() + 30
            while not self.saw_the_wait and time.monotonic() < deadline:
                time.sleep(0.05)
                other.execute("SELECT pg_stat_clear_snapshot()")  # else the view stays as first read in a transaction
                waiting = other.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE 'COPY batch %'"
                )
                self.saw_the_wait = waiting.fetchone()[0] == 1
            # leaving the block commits

    def __enter__(self) -> OtherWriter:
        self.start()
        assert self.inserted.wait(10), "the other writer never inserted its lot"
        return self

    def __exit__(self, *exc_info) -> None:
        self.join(10)


def _quickly_retrying(env, rows: list[dict], sleeps: list[float]):
    retry = RetryPolicy(attempts=3, base=0.01, cap=0.01)
    return env.runtime(memory_connector(rows), retry=retry, sleep=recorder(sleeps))


async def test_a_lot_created_by_another_writer_while_the_page_lands_is_landed_again_as_an_update(env, sleeps):
    await env.add_source()
    runtime = _quickly_retrying(env, [batch_record("LOT-1"), batch_record("LOT-2")], sleeps)
    with OtherWriter(env) as other:
        run = await runtime.run("lims")

    assert other.saw_the_wait
    assert (run.status, run.upserted_count) == (RunStatus.ok, 2) and len(sleeps) == 1
    async with env.database.unit_of_work() as session:
        names = dict((await session.execute(select(Batch.lot_number, Batch.product_name))).all())
    assert names == {"LOT-1": "BM-MSC lot LOT-1", "LOT-2": "BM-MSC lot LOT-2"}
    assert await _changes(env) == [("LOT-2", "create"), ("LOT-1", "update")]  # nothing of the failed attempt


async def test_the_page_read_ahead_stops_with_the_run_and_the_source_is_closed(env):
    """The next page is read and validated while the current one lands; when the run ends early (here: a
    shutdown after the first page), the read-ahead is cancelled and the source's page generator closed."""
    reads: list[int] = []
    closed = asyncio.Event()
    stop = asyncio.Event()

    class Slow(Stream):
        name, target, natural_key, schema = "batches", "batch", ("lot_number",), BatchIn

        async def read_pages(self, bookmark):
            try:
                for offset in range(0, 1000, 100):
                    reads.append(offset)
                    if offset:
                        stop.set()  # the shutdown arrives while page one lands
                        await asyncio.sleep(0.5)  # a slow source: this read is in flight when the run ends
                    yield Page([self.record(batch_record(f"LOT-{offset + i:04d}")) for i in range(100)],
                               {"offset": offset + 100})  # fmt: skip
            finally:
                closed.set()

    class Source(Connector):
        def streams(self):
            return [Slow()]

    await env.add_source()
    run = await env.runtime(Source, stop=stop).run("lims")

    assert run.status is RunStatus.interrupted and run.upserted_count == 100
    assert closed.is_set() and reads == [0, 100]  # one page ahead at most, and nothing after the run
    assert len(await env.lots()) == 100


async def test_a_quarantine_replay_meeting_the_same_race_retries_its_chunk(env, sleeps):
    await env.add_source()
    runtime = _quickly_retrying(env, [batch_record("LOT-1", passage=-1)], sleeps)
    assert (await runtime.run("lims")).quarantined_count == 1
    async with env.database.unit_of_work() as session:
        held = await session.scalar(select(QuarantinedRecord))
        held.payload = {**held.payload, "passage": 4}  # as if the source were fixed
    with OtherWriter(env) as other:
        replay = await runtime.replay_quarantine("lims")

    assert other.saw_the_wait and len(sleeps) == 1
    assert (replay.status, replay.upserted_count, replay.quarantined_count) == (RunStatus.ok, 1, 0)
    assert await env.scalar(select(Batch.product_name)) == "BM-MSC lot LOT-1"
    assert await _changes(env) == [("LOT-1", "update")]


def _stamped(lot: str, day: int, *, deleted: bool = False, product: str = "BM-MSC") -> dict:
    row = {"lot_number": lot, "modified": f"2026-01-0{day}T00:00:00+00:00"}
    return row | ({"_deleted": True} if deleted else batch_record(lot, product_name=product))


async def _products(env) -> list[tuple[str, str]]:
    async with env.database.unit_of_work() as session:
        return [tuple(row) for row in await session.execute(select(Batch.lot_number, Batch.product_name))]


async def test_the_same_content_newer_at_the_source_is_not_deleted_by_an_older_tombstone(env):
    """Day 1 and day 3 carry the same lot unchanged, then a tombstone of day 2 arrives: the lot lives (day 3 is
    the source's latest), in the run and in its replay. The ledger used to keep day 1 for unchanged content."""
    rows = [_stamped("LOT-1", 1), _stamped("LOT-1", 3), _stamped("LOT-1", 2, deleted=True)]
    await env.add_source()
    runtime = env.runtime(memory_connector(rows, page_size=1))
    first = await runtime.run("lims")
    assert (first.upserted_count, first.deleted_count) == (1, 0)
    assert await _products(env) == [("LOT-1", "BM-MSC")]
    replay = await runtime.run("lims", trigger=RunTrigger.replay, from_bookmarks=first.start_bookmarks)
    assert (replay.upserted_count, replay.deleted_count) == (0, 0)


async def test_a_lot_deleted_again_later_is_not_brought_back_by_an_older_version(env):
    """Deleted on day 1 and again on day 3, then a version of day 2 arrives: the lot stays deleted."""
    rows = [_stamped("LOT-1", 1, deleted=True), _stamped("LOT-1", 3, deleted=True), _stamped("LOT-1", 2)]
    await env.add_source()
    runtime = env.runtime(memory_connector(rows, page_size=1))
    first = await runtime.run("lims")
    assert first.upserted_count == 0 and await _products(env) == []
    replay = await runtime.run("lims", trigger=RunTrigger.replay, from_bookmarks=first.start_bookmarks)
    assert (replay.upserted_count, replay.deleted_count) == (0, 0) and await _products(env) == []
