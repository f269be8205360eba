"""A large Parquet source is read while it downloads (its footer fetched ahead with a range request): the export
is the one the spooled file gives, byte for byte; a source that changed fails the job as a changed source even
when its damaged bytes cannot be decoded; a worker stopping mid-download leaves nothing behind. The size from
which a source is read so is lowered here, so that small files take that path."""

from __future__ import annotations

import io
import struct

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.exports.conftest import request as request_export
from tests.exports.test_exports import run_export

from cellcommons.exports import sources
from cellcommons.exports.models import ExportStatus

COLUMNS = [
    dict(name="donor_id", type="string", sensitivity="quasi_identifier"),
    dict(name="age", type="integer", sensitivity="quasi_identifier"),
    dict(name="lot_number", type="string", sensitivity="plain"),
    dict(name="viability_pct", type="double", sensitivity="plain"),
]


def source_bytes(rows: int = 60_000, shift: int = 0) -> bytes:
    table = pa.table(
        {
            "donor_id": [f"D-{(i + shift) % 997:04d}" if i % 13 else None for i in range(rows)],
            "age": [18 + (i * 7 + shift) % 70 for i in range(rows)],
            "lot_number": [f"L-{(i + shift) % 31}" for i in range(rows)],
            "viability_pct": [(i + shift) * 2_654_435_761 % 1_000_003 / 10_000 for i in range(rows)],
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=7_000, compression="zstd")
    return sink.getvalue()


def data_pages(exported: bytes) -> bytes:
    """The file without its footer (which names the export)."""
    return exported[: len(exported) - 8 - struct.unpack("<I", exported[-8:-4])[0]]


@pytest.fixture
def read_while_downloading(monkeypatch) -> list:
    """Sources of any size are read while they download; the list collects each such read."""
    reads: list = []

    class Counted(sources._Arriving):
        def __init__(self, *args):
            super().__init__(*args)
            reads.append(self)

    monkeypatch.setattr(sources, "READ_WHILE_DOWNLOADING", 0)
    monkeypatch.setattr(sources, "_Arriving", Counted)
    return reads


async def test_a_source_read_while_it_downloads_exports_what_the_spooled_file_does(world, request):
    data = source_bytes()
    assert len(data) > sources.FOOTER_BYTES
    source = await world.add_file("arriving.parquet", data, COLUMNS, "application/vnd.apache.parquet")
    spooled = await run_export(world, "lowlands", source=source)
    reads = request.getfixturevalue("read_while_downloading")
    arriving = await run_export(world, "lowlands", source=source)
    assert len(reads) == 1
    assert spooled.status is arriving.status is ExportStatus.succeeded, (arriving.error_code, arriving.error_message)
    first, second = await world.result(spooled, "lowlands"), await world.result(arriving, "lowlands")
    assert data_pages(first) == data_pages(second) and arriving.rows_written == 60_000
    assert pq.read_table(io.BytesIO(first)).equals(pq.read_table(io.BytesIO(second)))


@pytest.mark.parametrize("damage", ["other rows", "bytes overwritten in the middle"])
async def test_a_changed_source_read_while_it_downloads_fails_as_changed(world, read_while_downloading, damage):
    data = source_bytes()
    source = await world.add_file(f"changing {damage}.parquet", data, COLUMNS, "application/vnd.apache.parquet")
    if damage == "other rows":
        changed = source_bytes(shift=5)
    else:  # the footer still reads, the row groups it points at do not decode
        changed = data[:1000] + bytes(len(data) // 2) + data[1000 + len(data) // 2 :]
    await world.replace_file_bytes(source[1], changed)
    before = world.exported_keys("lowlands")
    job = await run_export(world, "lowlands", source=source)
    assert len(read_while_downloading) == 1
    assert (job.status, job.error_code, job.error_field) == (ExportStatus.failed, "source_changed", "distributionId")
    assert job.error_message.startswith("the source file's SHA-256 is ")
    assert world.exported_keys("lowlands") == before


async def test_a_worker_stopping_while_a_source_downloads_puts_the_job_back(world, read_while_downloading):
    source = await world.add_file("stopped.parquet", source_bytes(), COLUMNS, "application/vnd.apache.parquet")
    job = await request_export(world, "lowlands", dataset_version_id=source[0], distribution_id=source[1])
    worker = world.worker()
    await worker.claim(job.id)
    worker.stopping.set()
    before = world.exported_keys("lowlands")
    back = await worker.run(job.id)
    assert (back.status, back.attempts, back.lease_owner) == (ExportStatus.queued, 0, None)
    assert world.exported_keys("lowlands") == before
    assert len(read_while_downloading) == 1 and not read_while_downloading[0]._thread.is_alive()
