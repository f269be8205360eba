"""Records through the sync runtime (validation, ledger, batched upserts, bookmarks) against a raw COPY of the
same batch rows, same run; and peak RSS of the runtime for two source sizes (memory should stay flat)."""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from bench.report import Measure, Report
from cellcommons.background import settle_heap
from cellcommons.catalogue.enums import Sector, TransferBasis
from cellcommons.catalogue.models import Institution
from cellcommons.catalogue.schemas import BatchIn
from cellcommons.db import Database, driver_connection
from cellcommons.demo.scratch import ScratchStack
from cellcommons.settings import Settings
from cellcommons.sync.models import SyncSource
from cellcommons.sync.runtime import SyncRuntime
from cellcommons.sync.sdk import Connector, Page, Stream
from cellcommons.sync.targets import BATCH_COLUMNS, TARGETS

FULL, QUICK = 200_000, 20_000
PAGE = 1000


def record(i: int) -> dict[str, Any]:
    return {
        "lot_number": f"SYN-{i:07d}", "product_name": f"BM-MSC lot {i}", "cell_type": "CL:0002540",
        "tissue": "UBERON:0002371", "passage": 2 + i % 4, "population_doublings": "11.5",
        "culture_supplement": "hpl", "total_cells": 150_000_000, "volume_ml": "20", "containers": 2,
        "dmso_percent": "10", "storage_temperature_c": "-150", "manufactured_on": "2025-03-01",
        "expires_on": "2027-03-01", "release_status": "quarantine",
    }  # fmt: skip


def generated(size: int) -> type[Connector]:
    """A source of `size` records made page by page: nothing of the whole source is held in memory."""

    class Records(Stream):
        name, target, natural_key, schema = "batches", "batch", ("lot_number",), BatchIn

        async def read_pages(self, bookmark):
            offset = (bookmark or {}).get("offset", 0)
            while offset < size:
                upto = min(offset + PAGE, size)
                yield Page([self.record(record(i)) for i in range(offset, upto)], {"offset": upto})
                offset = upto

    class Generated(Connector):
        def streams(self):
            return [Records()]

    return Generated


async def _institution(database: Database, settings: Settings) -> uuid.UUID:
    async with database.unit_of_work() as session:
        institution = Institution(slug="bench-site", name="Bench", country="NL", sector=Sector.non_profit,
                                  transfer_basis=TransferBasis.eea, origin_node=settings.node_id)  # fmt: skip
        session.add(institution)
        await session.flush()
        session.add(SyncSource(name="bench", connector="generated", institution_id=institution.id, config={},
                               schedule="0 * * * *", next_run_at=datetime.now(UTC) + timedelta(days=1)))  # fmt: skip
        return institution.id


async def _through_runtime(settings: Settings, size: int) -> float:
    database = Database(settings)
    try:
        await _institution(database, settings)
        runtime = SyncRuntime(database, settings, connectors={"generated": generated(size)})
        start = time.perf_counter()
        run = await runtime.run("bench")
        elapsed = time.perf_counter() - start
        assert run.upserted_count == size, (run.status, run.error)
        return elapsed
    finally:
        await database.dispose()


async def _raw_copy(settings: Settings, size: int) -> float:
    """The same rows, validated and shaped beforehand (untimed); only the COPY is timed."""
    database = Database(settings)
    try:
        institution_id = await _institution(database, settings)
        async with database.unit_of_work() as session:
            scope = await TARGETS["batch"].scope(session, institution_id, settings.node_id)
        columns = ("id", "institution_id", "origin_node", *BATCH_COLUMNS)
        rows = []
        for i in range(size):
            checked = TARGETS["batch"].check(record(i), scope)
            rows.append((uuid.uuid4(), institution_id, settings.node_id, *(checked.row[c] for c in BATCH_COLUMNS)))
        async with database.unit_of_work() as session:
            connection = await driver_connection(session)
            start = time.perf_counter()
            async with connection.cursor() as cursor:
                async with cursor.copy(f"COPY batch ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        await copy.write_row(row)
            return time.perf_counter() - start
    finally:
        await database.dispose()


def _child(settings: Settings, size: int, results) -> None:
    settle_heap()  # as `cellcommons sync run` and the scheduler do once they have started
    elapsed = asyncio.run(_through_runtime(settings, size))
    results.put((elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def _in_child(stack: ScratchStack, size: int) -> tuple[float, float]:
    """One runtime pass in a fresh process, so its peak RSS is its own: (seconds, peak MiB)."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_child, args=(stack.new_database(), size, results))
    child.start()
    outcome = results.get()
    child.join()
    return outcome


def run(stack: ScratchStack, quick: bool, console: Console) -> Report:
    size = QUICK if quick else FULL
    with console.status(f"{size // 4:,} records through the runtime…"):
        _, small_peak = _in_child(stack, size // 4)
    with console.status(f"{size:,} records through the runtime…"):
        ours, large_peak = _in_child(stack, size)
    with console.status(f"raw COPY of the same {size:,} rows…"):
        baseline = asyncio.run(_raw_copy(stack.new_database(), size))
    report = Report(
        "sync",
        notes=[
            f"{size:,} batch records in pages of {PAGE}: runtime {ours:,.1f} s (validation with the catalogue's "
            f"rules; per page the ledger and held-lot lookups, COPY of the new lots, their change-log and ledger "
            f"entries, bookmark + run counts); raw COPY {baseline:,.1f} s",
            f"peak RSS of the runtime process: {small_peak:,.0f} MiB for {size // 4:,} records, "
            f"{large_peak:,.0f} MiB for {size:,} ({large_peak / small_peak:.2f}×)",
        ],
    )
    report.measures.append(Measure("sync records/s", size / ours, size / baseline, "rec/s", "raw COPY", 0.3))
    return report
