"""Reading a Parquet source (no server needed). Its text is read as each row group's dictionary: text that
repeats stays coded, every batch of a row group on one dictionary object, so batches waiting to be written hold
it once; text that hardly repeats (identifiers, remarks) is decoded, as a dictionary would cost the writer more;
donor ids stay coded whatever their count, for the pseudonymiser. A column the export reads must be in the file
once."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cellcommons.access.schemas import ColumnTreatment
from cellcommons.catalogue.enums import Sensitivity
from cellcommons.errors import InvalidInput
from cellcommons.exports import sources
from cellcommons.exports.policy import ColumnPlan

ROWS = 20_000
PLANS = [
    ColumnPlan("donor_id", Sensitivity.quasi_identifier, ColumnTreatment.pseudonymise, pa.string()),
    ColumnPlan("lot_number", Sensitivity.plain, ColumnTreatment.keep, pa.string()),
    ColumnPlan("remark", Sensitivity.plain, ColumnTreatment.keep, pa.string()),
]


def _batches(monkeypatch) -> list[pa.RecordBatch]:
    table = pa.table({
        "donor_id": [f"D-{i:05d}" for i in range(ROWS)],  # every donor once: coded all the same
        "lot_number": [f"L-{i % 40}" if i % 9 else None for i in range(ROWS)],
        "remark": [f"remark {i}" for i in range(ROWS)],
    })  # fmt: skip
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=10_000)
    monkeypatch.setattr(sources, "BATCH_BYTES", 64 * 1024)  # several batches per row group
    return list(sources.parquet_batches(iter([sink.getvalue()]), PLANS, None))


def test_repeating_text_stays_the_row_groups_dictionary_shared_by_its_batches(monkeypatch):
    batches = _batches(monkeypatch)
    assert len(batches) > 4
    lots = [batch.column("lot_number") for batch in batches]
    assert all(pa.types.is_dictionary(values.type) for values in lots)
    assert pa.chunked_array(lots).to_pylist() == [f"L-{i % 40}" if i % 9 else None for i in range(ROWS)]
    assert len({values.dictionary.buffers()[2].address for values in lots}) == 2  # per row group, not per batch


def test_text_that_hardly_repeats_is_decoded_and_donor_ids_stay_coded(monkeypatch):
    batches = _batches(monkeypatch)
    assert all(batch.schema.field("remark").type == pa.string() for batch in batches)
    assert pa.chunked_array([batch.column("remark") for batch in batches]).to_pylist() == [
        f"remark {i}" for i in range(ROWS)
    ]
    assert all(pa.types.is_dictionary(batch.schema.field("donor_id").type) for batch in batches)


def _read(table: pa.Table, monkeypatch, **options) -> list[pa.RecordBatch]:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    monkeypatch.setattr(sources, "BATCH_BYTES", 64 * 1024)
    return list(sources.parquet_batches(iter([sink.getvalue()]), PLANS, None))


def test_unique_text_in_plain_pages_is_decoded(monkeypatch):
    """Plain pages (or pages after a writer fell back from its dictionary) give no dictionary to read: Arrow's
    reader builds one of the values so far, as many as the first batch's rows. Decoded, not coded."""
    table = pa.table(
        {"donor_id": ["D-1"] * ROWS, "lot_number": ["L-1"] * ROWS, "remark": [f"r{i}" for i in range(ROWS)]}
    )
    batches = _read(table, monkeypatch, use_dictionary=["donor_id", "lot_number"])
    assert all(batch.schema.field("remark").type == pa.string() for batch in batches)
    assert pa.types.is_dictionary(batches[0].schema.field("lot_number").type)


def test_text_in_column_chunks_over_the_bound_is_read_plain(monkeypatch):
    """A dictionary the reader builds itself lasts to the end of the row group: only chunks of bounded size are
    read as dictionaries, donor ids included."""
    monkeypatch.setattr(sources, "CODED_CHUNK_BYTES", 1024)
    table = pa.table(
        {"donor_id": [f"D-{i % 50}" for i in range(ROWS)], "lot_number": ["L-1"] * ROWS, "remark": ["r"] * ROWS}
    )
    batches = _read(table, monkeypatch)
    assert pa.types.is_dictionary(batches[0].schema.field("lot_number").type)  # its chunk is tiny
    assert batches[0].schema.field("donor_id").type == pa.string()
    assert pa.chunked_array([b.column("donor_id") for b in batches]).to_pylist() == table.column("donor_id").to_pylist()


def test_a_column_the_file_holds_twice_is_refused_naming_it():
    table = pa.Table.from_arrays([pa.array(["D-1"]), pa.array(["L-1"]), pa.array(["L-2"]), pa.array(["r"])],
                                 names=["donor_id", "lot_number", "lot_number", "remark"])  # fmt: skip
    sink = io.BytesIO()
    pq.write_table(table, sink)
    with pytest.raises(InvalidInput, match="column 'lot_number' more than once") as refused:
        list(sources.parquet_batches(iter([sink.getvalue()]), PLANS, None))
    assert refused.value.field == "distributionId"
