"""The Parquet stream on its own: dictionary-encoded batches (pseudonyms of a Parquet source) are stored as
their dictionary and indices, read back as plain values with the schema and terms readers are given."""

from __future__ import annotations

import io

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from cellcommons.exports.writer import ParquetStream, with_terms

SCHEMA = with_terms(
    pa.schema([("donor_id", pa.string()), ("sampled_at", pa.timestamp("us", tz="Europe/Amsterdam"))]),
    {"cellcommons.dua_id": "dua-1"},
)


def _batch(indices: list[int | None], dictionary: list[str]) -> pa.RecordBatch:
    donors = pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array(dictionary))
    instants = pa.array(range(len(indices)), pa.timestamp("us", tz="Europe/Amsterdam"))
    return pa.RecordBatch.from_arrays([donors, instants], names=SCHEMA.names)


def _written(batches: list[pa.RecordBatch]) -> bytes:
    stream = ParquetStream(iter(batches), SCHEMA, without_statistics=["donor_id"])
    return stream.read()


def test_dictionary_batches_read_back_as_the_schemas_values_with_the_terms(tmp_path):
    first, second = ["p-a", "p-b"], ["p-c", "p-a", "p-d"]  # a second source row group: another dictionary
    many = [i % 3 for i in range(6000)]
    data = _written(
        [_batch([0, 1, None, 0], first), _batch([0, 0], first), _batch([2, 1, 0], second), _batch(many, second)]
    )
    exported = pq.ParquetFile(io.BytesIO(data))
    assert exported.schema_arrow.field("donor_id").type == pa.string()
    assert exported.schema_arrow.field("sampled_at").type == pa.timestamp("us", tz="Europe/Amsterdam")
    assert exported.schema_arrow.metadata[b"cellcommons.dua_id"] == b"dua-1"
    assert exported.metadata.metadata[b"cellcommons.dua_id"] == b"dua-1"  # for readers without Arrow's schema
    table = exported.read()
    donors = ["p-a", "p-b", None, "p-a", "p-a", "p-a", "p-d", "p-a", "p-c"] + [second[i] for i in many]
    assert table.column("donor_id").to_pylist() == donors
    # One row group, its batches' dictionaries unified: indices of a few bits a row, where the plain values the
    # writer falls back to at a changed dictionary would take some 40 KB
    assert exported.metadata.num_row_groups == 1
    assert exported.metadata.row_group(0).column(0).total_uncompressed_size < 8_000
    path = tmp_path / "export.parquet"
    path.write_bytes(data)
    assert duckdb.sql(f"SELECT count(*) FROM '{path}' WHERE donor_id = 'p-d'").fetchall() == [(2001,)]
    kinds = dict(duckdb.sql(f"DESCRIBE SELECT * FROM '{path}'").fetchall()[i][:2] for i in range(2))
    assert kinds == {"donor_id": "VARCHAR", "sampled_at": "TIMESTAMP WITH TIME ZONE"}


def test_a_row_groups_dictionary_holds_only_the_values_its_rows_use():
    """A source row group's dictionary names values of rows elsewhere (or filtered out): they stay out of the file."""
    data = _written([_batch([2, None, 2], ["p-a", "p-b", "p-c", "p-d"]), _batch([0], ["p-a", "p-b", "p-c", "p-d"])])
    stored = pq.read_table(io.BytesIO(data), read_dictionary=["donor_id"]).column("donor_id")
    assert stored.to_pylist() == ["p-c", None, "p-c", "p-a"]
    assert {value for chunk in stored.chunks for value in chunk.dictionary.to_pylist()} == {"p-a", "p-c"}


def test_a_dictionary_of_any_index_type_is_cut_to_the_values_used():
    donors = pa.DictionaryArray.from_arrays(pa.array([3, 3, None], pa.int8()), pa.array(["p-a", "p-b", "p-c", "p-d"]))
    instants = pa.array(range(3), pa.timestamp("us", tz="Europe/Amsterdam"))
    data = _written([pa.RecordBatch.from_arrays([donors, instants], names=SCHEMA.names)])
    stored = pq.read_table(io.BytesIO(data), read_dictionary=["donor_id"]).column("donor_id")
    assert stored.to_pylist() == ["p-d", "p-d", None] and stored.chunk(0).dictionary.to_pylist() == ["p-d"]


def test_an_export_without_rows_has_the_schema_and_the_terms():
    exported = pq.ParquetFile(io.BytesIO(_written([])))
    assert exported.schema_arrow.remove_metadata() == SCHEMA.remove_metadata()
    assert exported.metadata.metadata[b"cellcommons.dua_id"] == b"dua-1" and exported.metadata.num_rows == 0
