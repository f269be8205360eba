"""Bounded memory: `cellcommons export run` in a process of its own exports a source whose rows, held in memory
at once, would be several times the cap; its peak RSS (the kernel's high-water mark) stays under the cap.
(`python -m bench export` shows the peak flat across row counts.)

The source is Parquet whose long text values repeat (dictionary-encoded, so the file is small and quick to make)
but decode to full strings: 2.4 M rows of about 400 bytes each."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
from tests.exports.conftest import Draws, request
from tests.processes import cli_environment

from cellcommons.exports.models import ExportStatus

ROWS, CHUNK = 2_400_000, 200_000  # about 1 GiB of rows once decoded
CAP = 300 * 1000 * 1000  # the 300 MB of peak RSS for the whole `cellcommons` process (imports: ~140 MiB)
COLUMNS = [
    dict(name="donor_id", type="string", sensitivity="quasi_identifier"),
    dict(name="age", type="integer", sensitivity="quasi_identifier"),
    dict(name="protocol", type="string", sensitivity="plain"),
    dict(name="remarks", type="string", sensitivity="plain"),
    dict(name="viability_pct", type="double", sensitivity="plain"),
]
# The kernel's high-water mark of this process's own memory (VmHWM). Not getrusage's ru_maxrss: a child
# inherits the parent's at fork and keeps it across exec, so it would report pytest's peak.
PEAK = """
import re, sys
from cellcommons.cli import app
try:
    app(["export", "run", sys.argv[1]], standalone_mode=False)
finally:
    status = open("/proc/self/status").read()
    print("peak_kib", re.search(r"VmHWM:\\s*(\\d+) kB", status)[1])
"""


def source_of(rows: int) -> tuple[bytes, int]:
    """A Parquet file of `rows` rows, and the bytes those rows take in Arrow once decoded."""
    rng = Draws(12)
    donors = pa.array([f"D-{i:05d}" for i in range(20_000)])
    protocols = pa.array([f"protocol {i:04d} " + "x" * 180 for i in range(500)])
    remarks = pa.array([f"remark {i:04d} " + "y" * 190 for i in range(500)])
    sink, decoded = io.BytesIO(), 0
    schema = pa.schema([("donor_id", pa.string()), ("age", pa.int64()), ("protocol", pa.string()),
                        ("remarks", pa.string()), ("viability_pct", pa.float64())])  # fmt: skip
    with pq.ParquetWriter(sink, schema, compression="zstd", store_schema=False) as writer:
        for start in range(0, rows, CHUNK):
            size = min(CHUNK, rows - start)
            chunk = pa.table(
                {
                    "donor_id": donors.take(rng.integers(0, 20_000, size)),
                    "age": rng.integers(18, 90, size),
                    "protocol": protocols.take(rng.integers(0, 500, size)),
                    "remarks": remarks.take(rng.integers(0, 500, size)),
                    "viability_pct": rng.uniform(60, 99, size),
                },
                schema=schema,
            )
            decoded += chunk.nbytes
            writer.write_table(chunk)
    return sink.getvalue(), decoded


async def exported_peak(world, rows: int) -> tuple[int, int]:
    """Export a source of `rows` rows with `cellcommons export run` in a process of its own; its peak RSS and
    the source's decoded size."""
    data, decoded = source_of(rows)
    source = await world.add_file(f"rows-{rows}.parquet", data, COLUMNS, "application/vnd.apache.parquet")
    job = await request(world, "lowlands", dataset_version_id=source[0], distribution_id=source[1])
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", PEAK, str(job.id)], env=cli_environment(world.settings),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    finished = await world.job(job.id)
    assert (finished.status, finished.rows_written) == (ExportStatus.succeeded, rows)
    assert f"export {job.id}: succeeded — {rows:,} rows" in done.stdout
    return int(done.stdout.rsplit("peak_kib", 1)[1]) * 1024, decoded


async def test_peak_memory_stays_under_the_cap_for_a_source_several_times_larger(world):
    peak, decoded = await exported_peak(world, ROWS)
    assert decoded > 3 * CAP  # loading the rows at once would take more than three times the cap
    assert peak < CAP, f"peak RSS {peak / 2**20:.0f} MiB for {decoded / 2**20:.0f} MiB of rows"
