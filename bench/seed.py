"""Seeding the bench-scale consortium (generate + COPY) against a raw COPY of the same rows, same run."""

from __future__ import annotations

import time

from rich.console import Console

from bench.report import Measure, Report
from cellcommons.db import Database, driver_connection
from cellcommons.demo.consortium import SCALES, Consortium, Scale
from cellcommons.demo.scratch import ScratchStack
from cellcommons.demo.seed import bulk_rows, copy_rows, seed_bulk

QUICK = Scale("quick", batches_per_institution=2_000, datasets_per_institution=200)


async def _ours(stack: ScratchStack, consortium: Consortium) -> tuple[int, float]:
    database = Database(stack.new_database())
    try:
        start = time.perf_counter()
        async with database.unit_of_work() as session:
            counts = await seed_bulk(session, consortium, origin="bench")
        return sum(counts.values()), time.perf_counter() - start
    finally:
        await database.dispose()


async def _raw_copy(stack: ScratchStack, consortium: Consortium) -> tuple[int, float]:
    """The same rows, generated beforehand (untimed), then only COPY is timed."""
    database = Database(stack.new_database())
    try:
        async with database.unit_of_work() as session:
            prepared = [
                await bulk_rows(session, records, origin="bench", seed=consortium.seed * 7919 + index)
                for index, records in enumerate(consortium.records())
            ]
            connection = await driver_connection(session)
            start = time.perf_counter()
            rows = 0
            for bulk in prepared:
                rows += await copy_rows(connection, bulk.tables)
            elapsed = time.perf_counter() - start
        return rows, elapsed
    finally:
        await database.dispose()


def run(stack: ScratchStack, quick: bool, console: Console) -> Report:
    import asyncio

    consortium = Consortium(QUICK if quick else SCALES["bench"], seed=2026)
    with console.status("seeding through the bulk loader…"):
        rows, ours = asyncio.run(_ours(stack, consortium))
    with console.status("raw COPY of the same rows…"):
        baseline_rows, baseline = asyncio.run(_raw_copy(stack, consortium))
    scale = consortium.scale
    report = Report(
        "seed",
        notes=[
            f"scale {scale.name}: {4 * scale.batches_per_institution:,} batches, "
            f"{4 * scale.batches_per_institution * scale.qc_per_batch:,} QC results, "
            f"{4 * scale.datasets_per_institution:,} datasets; {rows:,} rows in all",
            f"whole seed took {ours:,.1f} s (target: under 600 s); raw COPY alone {baseline:,.1f} s",
        ],
    )
    report.measures.append(Measure("seed rows/s", rows / ours, baseline_rows / baseline, "rows/s", "raw COPY", 0.5))
    return report
