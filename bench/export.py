"""Exports: the whole pipeline (S3 source → DUA policy → Parquet with terms → multipart upload) against
`pyarrow.parquet.write_table` of the same rows, held in memory, to a local file (zstd both), and against the same
pipeline with the policy off; same server, same run. Each export runs as `ExportWorker` in a process of its own,
so its peak RSS (VmHWM) is its own; it is taken at two row counts to show it flat. Each side runs RUNS times and
the best runs are compared (every run is printed): the machine's other work only ever slows a run down.

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
from cellcommons.demo.stack import EmbeddedS3

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


RUNS = 3  # of each: the export with the policy on and off, and write_table; the best of each is compared


def run(stack: ScratchStack, quick: bool, console: Console) -> Report:
    settings = stack.new_database()
    try:
        return asyncio.run(_measure(settings, stack.s3_server, 200_000 if quick else 5_000_000, console))
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


async def _measure(settings, s3_server: EmbeddedS3 | None, count: int, console: Console) -> Report:
    world = await make_world(settings)
    try:
        with console.status(f"making {count:,} rows…"):
            table = rows_of(count)
            small = table.slice(0, count // 5)
        with console.status("pyarrow.parquet.write_table of the rows in memory…"):
            baselines = _write_table_runs(table)
        with console.status("uploading the sources…"):
            full = await _queued(world, table, "full", 2 * RUNS)
            fifth = await _queued(world, small, "fifth", 1)
        runs: dict[str, list[dict]] = {"on": [], "off": []}
        for attempt in range(RUNS):  # on and off in turns, so both meet the same moments of a noisy machine
            for mode in ("on", "off"):
                with console.status(f"exporting (policy {mode}, run {attempt + 1} of {RUNS})…"):
                    runs[mode].append(_child(settings, full.pop(), mode, s3_server))
        with console.status("exporting a fifth of the rows…"):
            fifth_run = _child(settings, fifth[0], "on", s3_server)
        load = os.getloadavg()
    finally:
        await world.database.dispose()
    mb = table.nbytes / MB
    on, off = (min(runs[mode], key=lambda r: r["seconds"]) for mode in ("on", "off"))
    baseline = min(baselines, key=lambda r: r[0])
    fastest_first = sorted(r["seconds"] for r in runs["on"])
    ratios = [b[0] / seconds for seconds, b in zip(fastest_first, sorted(baselines), strict=True)]
    peak = max(r["peak"] for r in [*runs["on"], fifth_run])
    return Report(
        "export",
        measures=[
            Measure(
                "export with the DUA policy",
                count / on["seconds"],
                count / baseline[0],
                "rows/s",
                "write_table in memory → local file",
                target=0.5,
            ),
            Measure(
                "export with the DUA policy",
                mb / on["seconds"],
                mb / baseline[0],
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
            "decoded (text as each row group's dictionary) and through the policy (HMAC pseudonyms of 50 000 "
            "donors, once per row group, kept as that dictionary's pseudonyms and the batch's indices; age bands "
            "as a dictionary of labels; months), a row group's worth ahead; on another, Parquet with the terms "
            "encoded (dictionaries and indices stored as they are) and hashed; the SDK's threads upload the parts",
            f"best of {RUNS} on each side, runs alternating policy on and off: export {_seconds(runs['on'])} s "
            f"(policy off {_seconds(runs['off'])} s), write_table {', '.join(f'{b[0]:.2f}' for b in baselines)} s; "
            f"the runs' ratios, paired in order of speed: {', '.join(f'{r:.2f}×' for r in ratios)}",
            f"CPU time in the best runs: the export process {on['cpu']:.1f} s (policy off {off['cpu']:.1f} s), "
            f"write_table {baseline[1]:.1f} s; {_server_cpu(on, off)}on {os.cpu_count()} cores shared by the "
            f"export and the S3 server; load average {load[0]:.2f} after the exports (1-minute)",
            f"peak RSS of the export process: {fifth_run['peak'] / 2**20:,.0f} MiB at {count // 5:,} rows, "
            f"{_mib(runs['on'])} MiB at {count:,} rows (policy off: {_mib(runs['off'])} MiB); target < 300 MB "
            f"({300 * MB / 2**20:.0f} MiB) for any row count: {'ok' if peak < 300 * MB else 'MISSED'}",
            "baseline: pyarrow.parquet.write_table(table, file, compression='zstd') of the same rows already in "
            "memory (its process holds every row; the export's holds a few batches)",
        ],
    )


def _seconds(runs: list[dict]) -> str:
    return ", ".join(f"{r['seconds']:.2f}" for r in runs)


def _mib(runs: list[dict]) -> str:
    return ", ".join(f"{r['peak'] / 2**20:,.0f}" for r in runs)


def _server_cpu(on: dict, off: dict) -> str:
    if on["server_cpu"] is None:
        return ""
    return f"the S3 server {on['server_cpu']:.1f} s serving the best export (policy off {off['server_cpu']:.1f} s); "


def _write_table_runs(table: pa.Table) -> list[tuple[float, float]]:
    """RUNS runs, each as (seconds, CPU seconds)."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="cc-bench-export-") as folder:
        for attempt in range(RUNS):
            start, cpu = time.perf_counter(), time.process_time()
            pq.write_table(table, Path(folder) / f"baseline-{attempt}.parquet", compression="zstd")
            runs.append((time.perf_counter() - start, time.process_time() - cpu))
    return runs


async def _queued(world, table: pa.Table, name: str, jobs: int) -> list:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    source = await world.add_file(f"{name}.parquet", sink.getvalue(), COLUMNS, "application/vnd.apache.parquet")
    queued = []
    for _ in range(jobs):
        job = await request(world, "lowlands", dataset_version_id=source[0], distribution_id=source[1])
        queued.append(job.id)
    return queued


def _child(settings, export_id, mode: str, s3_server: EmbeddedS3 | None) -> dict:
    server_cpu = s3_server.cpu_seconds() if s3_server else None
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(export_id), mode], env=cli_environment(settings), cwd=ROOT,
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"export {export_id} ({mode}) failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["status"] != "succeeded":
        raise RuntimeError(f"export {export_id} ({mode}): {result['status']}: {result['error']}")
    result["server_cpu"] = None if server_cpu is None else s3_server.cpu_seconds() - server_cpu
    return result
