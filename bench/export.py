"""Exports: the whole pipeline (S3 source → DUA policy → Parquet with terms → multipart upload) against
`pyarrow.parquet.write_table` of the same rows, held in memory, to a local file (zstd both), and against the same
pipeline with the policy off; same server, same run. Each export runs as `ExportWorker` in a process of its own,
so its peak RSS (VmHWM) is its own; it is taken at two row counts to show it flat.

The source is Parquet in object storage: a donor id (pseudonymised), an age (banded), a visit date and a zoned
timestamp (to the month), a lot, a test, numbers and a flag — clinical rows of about 100 bytes in Arrow.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console

# The agreements and the dataset are set up exactly as the export tests do it.
from tests.exports.conftest import Draws, make_world, request
from tests.processes import cli_environment

from bench.report import Measure, Report
from cellcommons.demo.scratch import ScratchStack

ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000
CHUNK = 500_000
COLUMNS = [
    dict(name="donor_id", type="string", sensitivity="quasi_identifier"),
    dict(name="age", type="integer", sensitivity="quasi_identifier"),
    dict(name="visit_date", type="date", sensitivity="quasi_identifier"),
    dict(name="sampled_at", type="timestamp(us, Europe/Amsterdam)", sensitivity="quasi_identifier"),
    dict(name="lot_number", type="string", sensitivity="plain"),
    dict(name="test_type", type="string", sensitivity="plain"),
    dict(name="viability_pct", type="double", sensitivity="plain"),
    dict(name="cell_count", type="integer", sensitivity="plain"),
    dict(name="passed", type="boolean", sensitivity="plain"),
]
# Runs one claimed job in this process and reports its time and the process's peak RSS. "off" keeps every
# column as it is (direct identifiers aside): the pipeline without the policy's work.
CHILD = """
import asyncio, json, re, sys, time, uuid
from cellcommons.db import Database
from cellcommons.exports import policy, worker
from cellcommons.exports.writer import return_freed_memory
from cellcommons.settings import load_settings
from cellcommons.storage import ObjectStore

export_id, mode = uuid.UUID(sys.argv[1]), sys.argv[2]
if mode == "off":
    policy.treatment_of = lambda name, tag, kind, export_policy: policy.ColumnTreatment.keep
return_freed_memory()

async def main():
    settings = load_settings()
    database = Database(settings)
    try:
        runner = worker.ExportWorker(database, ObjectStore.from_settings(settings), settings)
        assert await runner.claim(export_id) == export_id
        start, cpu = time.perf_counter(), time.process_time()
        job = await runner.run(export_id)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        await database.dispose()
    peak = int(re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read())[1]) * 1024
    print(json.dumps({"status": job.status.value, "error": job.error_message, "rows": job.rows_written,
                      "bytes": job.size_bytes, "seconds": seconds, "cpu": cpu, "peak": peak}))

asyncio.run(main())
"""


def run(stack: ScratchStack, quick: bool, console: Console) -> Report:
    settings = stack.new_database()
    try:
        return asyncio.run(_measure(settings, 200_000 if quick else 5_000_000, console))
    finally:
        stack.drop(settings)


def rows_of(count: int) -> pa.Table:
    rng = Draws(2026)
    donors = pa.array([f"LDN-D-{i:06d}" for i in range(50_000)])
    lots = pa.array([f"LDN-BM-{i // 100:02d}-{i % 1000:03d}" for i in range(5_000)])
    tests = pa.array(["viability", "identity_marker", "sterility", "endotoxin", "mycoplasma", "potency"])
    chunks = []
    for start in range(0, count, CHUNK):
        size = min(CHUNK, count - start)
        chunks.append(pa.table({
            "donor_id": donors.take(rng.integers(0, len(donors), size)),
            "age": rng.integers(18, 80, size),
            "visit_date": pc.cast(pc.cast(rng.integers(17_000, 20_000, size), pa.int32()), pa.date32()),
            "sampled_at": pc.cast(rng.integers(1.5e15, 1.75e15, size), pa.timestamp("us", tz="Europe/Amsterdam")),
            "lot_number": lots.take(rng.integers(0, len(lots), size)),
            "test_type": tests.take(rng.integers(0, len(tests), size)),
            "viability_pct": pc.round(rng.uniform(60, 99, size), 2),
            "cell_count": rng.integers(10**6, 10**9, size),
            "passed": pc.greater(rng.uniform(0, 1, size), 0.05),
        }))  # fmt: skip
    return pa.concat_tables(chunks)


async def _measure(settings, count: int, console: Console) -> Report:
    world = await make_world(settings)
    try:
        with console.status(f"making {count:,} rows…"):
            table = rows_of(count)
            small = table.slice(0, count // 5)
        with console.status("pyarrow.parquet.write_table of the rows in memory…"):
            baseline, baseline_cpu = _write_table_seconds(table)
        with console.status("uploading the sources…"):
            full = await _queued(world, table, "full", 2)
            fifth = await _queued(world, small, "fifth", 1)
        results = {}
        for name, export_id, mode in [("on", full[0], "on"), ("off", full[1], "off"), ("fifth", fifth[0], "on")]:
            with console.status(f"exporting ({name})…"):
                results[name] = _child(settings, export_id, mode)
        load = os.getloadavg()
    finally:
        await world.database.dispose()
    mb = table.nbytes / MB
    on, off, fifth_run = results["on"], results["off"], results["fifth"]
    peak_on, peak_fifth = on["peak"] / 2**20, fifth_run["peak"] / 2**20
    return Report(
        "export",
        measures=[
            Measure(
                "export with the DUA policy",
                count / on["seconds"],
                count / baseline,
                "rows/s",
                "write_table in memory → local file",
                target=0.5,
            ),
            Measure(
                "export with the DUA policy",
                mb / on["seconds"],
                mb / baseline,
                "MB/s",
                "write_table in memory → local file",
                target=0.5,
            ),
            Measure(
                "export with the DUA policy",
                count / on["seconds"],
                count / off["seconds"],
                "rows/s",
                "same pipeline, policy off",
            ),
        ],
        notes=[
            f"{count:,} rows, {mb:,.0f} MB in Arrow; MB/s counts those bytes for both; Parquet out "
            f"{on['bytes'] / MB:,.1f} MB (policy on), {off['bytes'] / MB:,.1f} MB (off); zstd everywhere",
            "export = claim to recorded result: S3 GET of the source Parquet (spooled and hashed on a thread of "
            "its own, read as it arrives: its footer fetched ahead by a range request); on one thread, batches "
            "decoded (donor ids as each row group's dictionary) and through the policy (HMAC pseudonyms of 50 000 "
            "donors, once per row group; age bands, months), up to a row group's worth ahead; on another, Parquet "
            "with the terms encoded and hashed; the SDK's threads upload the parts",
            f"CPU time of the export process: {on['cpu']:.1f} s (policy off: {off['cpu']:.1f} s; write_table: "
            f"{baseline_cpu:.1f} s), on {os.cpu_count()} cores it shares with the S3 server; load average "
            f"{load[0]:.2f} after the exports (1-minute)",
            f"peak RSS of the export process: {peak_fifth:,.0f} MiB at {count // 5:,} rows, {peak_on:,.0f} MiB at "
            f"{count:,} rows (policy off: {off['peak'] / 2**20:,.0f} MiB); target < 300 MB ({300 * MB / 2**20:.0f} "
            f"MiB) for any row count: {'ok' if max(on['peak'], fifth_run['peak']) < 300 * MB else 'MISSED'}",
            "baseline: pyarrow.parquet.write_table(table, file, compression='zstd') of the same rows already in "
            "memory, best of 2 (its process holds every row; the export's holds a few batches)",
        ],
    )


def _write_table_seconds(table: pa.Table) -> tuple[float, float]:
    """The best of two runs: seconds, and the CPU seconds of that run."""
    best = (float("inf"), 0.0)
    with tempfile.TemporaryDirectory(prefix="cc-bench-export-") as folder:
        for attempt in range(2):
            start, cpu = time.perf_counter(), time.process_time()
            pq.write_table(table, Path(folder) / f"baseline-{attempt}.parquet", compression="zstd")
            best = min(best, (time.perf_counter() - start, time.process_time() - cpu))
    return best


async def _queued(world, table: pa.Table, name: str, jobs: int) -> list:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    source = await world.add_file(f"{name}.parquet", sink.getvalue(), COLUMNS, "application/vnd.apache.parquet")
    queued = []
    for _ in range(jobs):
        job = await request(world, "lowlands", dataset_version_id=source[0], distribution_id=source[1])
        queued.append(job.id)
    return queued


def _child(settings, export_id, mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(export_id), mode], env=cli_environment(settings), cwd=ROOT,
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"export {export_id} ({mode}) failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["status"] != "succeeded":
        raise RuntimeError(f"export {export_id} ({mode}): {result['status']}: {result['error']}")
    return result
