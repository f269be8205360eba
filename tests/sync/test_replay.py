"""Replaying a run (reading its pages again from the bookmarks it started with) changes nothing.

Records carry their source timestamp (the stream's replication key), with ties, updates and tombstones in any
order and any page size; the replay must write nothing: same rows, same ids, same `updated_at`, same ledger.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from tests.sync.conftest import SyncEnv, batch_record, existing_env, make_env, memory_connector

from cellcommons.catalogue.models import Batch
from cellcommons.sync.models import RunTrigger, SyncRecord

BASE = datetime(2026, 1, 1, tzinfo=UTC)
_examples = itertools.count()

rows = st.lists(
    st.tuples(
        st.integers(0, 8),  # lot: few, so duplicates and updates happen
        st.sampled_from(["A", "B", "C"]),  # content
        st.integers(0, 4),  # source timestamp (days): ties happen
        st.integers(0, 9),  # 0: a tombstone
    ),
    max_size=40,
)


async def _state(env: SyncEnv, prefix: str) -> tuple:
    async with env.database.unit_of_work() as session:
        batches = (await session.execute(
            select(Batch.lot_number, Batch.product_name, Batch.id, Batch.updated_at)
            .where(Batch.lot_number.startswith(prefix)).order_by(Batch.lot_number)
        )).all()  # fmt: skip
        ledger = (await session.execute(
            select(SyncRecord.record_key, SyncRecord.content_hash, SyncRecord.source_updated_at)
            .where(SyncRecord.record_key.startswith(prefix)).order_by(SyncRecord.record_key)
        )).all()  # fmt: skip
    return [tuple(b) for b in batches], [tuple(e) for e in ledger]


def _raw(prefix: str, example: list) -> list[dict]:
    out = []
    for lot, variant, days, kind in example:
        row = {"lot_number": f"{prefix}-{lot}", "modified": (BASE + timedelta(days=days)).isoformat()}
        if kind == 0:
            row["_deleted"] = True
        else:
            row |= batch_record(row["lot_number"], product_name=f"BM-MSC {variant}")
        out.append(row)
    return out


async def _example(fresh_settings, example: list, page_size: int) -> None:
    index = next(_examples)
    prefix, source = f"P{index}", f"src-{index}"
    env = await (make_env if index == 0 else existing_env)(fresh_settings)
    try:
        await env.add_source(source)
        runtime = env.runtime(memory_connector(_raw(prefix, example), page_size=page_size))
        first = await runtime.run(source)
        before = await _state(env, prefix)
        replay = await runtime.run(source, trigger=RunTrigger.replay, from_bookmarks=first.start_bookmarks)
        assert (replay.upserted_count, replay.deleted_count, replay.read_count) == (0, 0, first.read_count)
        assert await _state(env, prefix) == before
    finally:
        await env.database.dispose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(example=rows, page_size=st.integers(1, 7))
# Found by Hypothesis: the same content newer at the source, then an older tombstone (the ledger kept the older
# time for unchanged content, so the tombstone deleted the lot and the replay brought it back).
@example(example=[(0, "A", 0, 1), (0, "A", 2, 1), (0, "A", 1, 0)], page_size=1)
@example(example=[(0, "A", 1, 0), (0, "A", 3, 0), (0, "B", 2, 1)], page_size=1)
def test_replaying_a_run_changes_nothing(fresh_settings, example, page_size):
    asyncio.run(_example(fresh_settings, example, page_size))
