"""Exports end to end on PostgreSQL and S3: request under an agreement, run by the worker, read the Parquet
back with pyarrow and with DuckDB (an independent reader): columns, values, pseudonyms, terms."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from tests.exports.conftest import parquet_bytes

from cellcommons.audit.models import AuditEvent
from cellcommons.catalogue.models import DatasetVersion
from cellcommons.exports import service
from cellcommons.exports.models import BadRows, ExportStatus
from cellcommons.exports.policy import pseudonym, pseudonym_key
from cellcommons.exports.sources import BATCH_BYTES

CSV_COLUMNS = [
    dict(name="donor_id", type="string", sensitivity="quasi_identifier"),
    dict(name="age", type="integer", sensitivity="quasi_identifier"),
    dict(name="visit_date", type="date", sensitivity="quasi_identifier"),
    dict(name="visited_at", type="timestamp(us, Europe/Amsterdam)", sensitivity="quasi_identifier"),
    dict(name="full_name", type="string", sensitivity="direct_identifier"),
    dict(name="notes", type="text", sensitivity="quasi_identifier"),
    dict(name="adverse_events", type="string", sensitivity="sensitive"),
    dict(name="viability_pct", type="double", sensitivity="plain"),
    dict(name="lot_number", type="string", sensitivity="plain"),
]
CSV = (
    b"donor_id,age,visit_date,visited_at,full_name,notes,adverse_events,viability_pct,lot_number\n"
    b"D-001,43,2024-03-15,2024-03-31T23:30:00+00:00,Jan Jansen,felt fine,none,91.5,L1\n"
    b"D-002,40,2024-02-29,2024-02-01T00:10:00+00:00,Piet Pieters,,fever,88.25,L2\n"
    b'D-001,45,2023-12-31,2023-12-31T23:30:00+00:00,Jan Jansen,"said ""ok""",none,,L3\n'
    b"D-003,,,,Anne,,none,79,L4\n"
)


async def run_export(world, recipient: str, source: tuple | None = None, **request):
    """Request as a member of the recipient institution (a file's version and distribution, or the first
    version's catalogue batches), then run the job on a worker of its own."""
    version, distribution = source or (world.consortium.versions["leiden"].id, None)
    async with world.database.unit_of_work() as session:
        job = await service.request_export(
            session, world.settings, world.member(recipient), agreement_id=world.agreements[recipient].id,
            dataset_version_id=version, distribution_id=distribution, **request,
        )  # fmt: skip
    worker = world.worker()
    assert await worker.claim(job.id) == job.id
    return await worker.run(job.id)


@pytest.fixture(scope="module")
async def csv_file(world):
    return await world.add_file("visits.csv", CSV, CSV_COLUMNS)


async def test_the_policy_shapes_the_columns_and_the_file_carries_its_terms(world, csv_file, tmp_path):
    job = await run_export(world, "lowlands", source=csv_file)
    assert job.status is ExportStatus.succeeded, (job.error_code, job.error_message)
    data = await world.result(job, "lowlands")
    table = pq.read_table(io.BytesIO(data))

    # Direct identifiers, free text and (by this policy) sensitive columns are gone.
    assert table.column_names == ["donor_id", "age", "visit_date", "visited_at", "viability_pct", "lot_number"]
    key = pseudonym_key(world.settings, world.agreements["lowlands"].id)
    rows = table.to_pylist()
    assert [r["donor_id"] for r in rows] == [pseudonym(key, d) for d in ("D-001", "D-002", "D-001", "D-003")]
    assert [r["age"] for r in rows] == ["40-44", "40-44", "45-49", None]
    assert [r["visit_date"] for r in rows] == [date(2024, 3, 1), date(2024, 2, 1), date(2023, 12, 1), None]
    # The month of a timestamp is its zone's: 23:30 UTC on 31 March is 1 April in Amsterdam.
    assert [r["visited_at"] for r in rows] == [date(2024, 4, 1), date(2024, 2, 1), date(2024, 1, 1), None]
    assert [r["viability_pct"] for r in rows] == [91.5, 88.25, None, 79.0]

    # Bytes, rows and checksum recorded on the job are the file's.
    assert (job.rows_written, job.size_bytes) == (4, len(data))
    assert job.sha256 == hashlib.sha256(data).hexdigest()

    terms = {k.decode(): v.decode() for k, v in pq.read_schema(io.BytesIO(data)).metadata.items()}
    agreement = world.agreements["lowlands"]
    assert terms["cellcommons.dua_id"] == str(agreement.id)
    assert terms["cellcommons.export_id"] == str(job.id)
    assert terms["cellcommons.recipient"] == "lowlands-regmed"
    assert terms["cellcommons.expires_on"] == agreement.expires_on.isoformat()
    async with world.database.unit_of_work() as session:
        version = await session.get_one(DatasetVersion, csv_file[0])
    assert terms["cellcommons.dataset_version"] == str(version.version)
    assert terms["cellcommons.dataset_id"].startswith("CCD-")
    assert terms["cellcommons.source_sha256"] == hashlib.sha256(CSV).hexdigest()
    assert json.loads(terms["cellcommons.duo_terms"]) == [{"term": "DUO:0000006", "parameter": {}}]
    policy = {p["column"]: p["treatment"] for p in json.loads(terms["cellcommons.policy"])}
    assert policy == {"donor_id": "pseudonymise", "age": "generalise", "visit_date": "generalise",
                      "visited_at": "generalise", "viability_pct": "keep", "lot_number": "keep"}  # fmt: skip
    assert terms["cellcommons.platform_version"]
    meta = pq.read_metadata(io.BytesIO(data))
    assert meta.row_group(0).column(0).compression == "ZSTD"

    # An independent reader (DuckDB's own Parquet reader) sees the same rows and terms.
    file = tmp_path / "export.parquet"
    file.write_bytes(data)
    with duckdb.connect() as db:
        seen = db.execute(f"SELECT donor_id, age, visit_date, viability_pct FROM read_parquet('{file}')").fetchall()
        metadata = dict(
            db.execute(f"SELECT key::VARCHAR, value::VARCHAR FROM parquet_kv_metadata('{file}')").fetchall()
        )
    assert seen == [(r["donor_id"], r["age"], r["visit_date"], r["viability_pct"]) for r in rows]
    assert metadata["cellcommons.dua_id"] == str(agreement.id)


async def test_pseudonyms_agree_within_an_agreement_and_differ_across(world, csv_file):
    first = pq.read_table(
        io.BytesIO(await world.result(await run_export(world, "lowlands", source=csv_file), "lowlands"))
    )
    again = pq.read_table(
        io.BytesIO(await world.result(await run_export(world, "lowlands", source=csv_file), "lowlands"))
    )
    other = pq.read_table(io.BytesIO(await world.result(await run_export(world, "stroma", source=csv_file), "stroma")))
    ids, repeated, theirs = (t.column("donor_id").to_pylist() for t in (first, again, other))
    assert ids == repeated  # same donor, same agreement: same pseudonym, export after export
    assert ids[0] == ids[2] and len(set(ids)) == 3  # D-001 twice
    assert not set(ids) & set(theirs)  # two recipients cannot join on donor
    assert all(len(p) == 32 and p not in CSV.decode() for p in ids)


async def test_parquet_donor_ids_are_pseudonymised_row_group_by_row_group(world):
    """A Parquet source's donor ids are read as each row group's dictionary: the pseudonyms agree with the
    reference row by row across row groups and batches, and nulls stay null. Numbers that hardly repeat are
    written without a dictionary, text with one; pseudonyms without min/max statistics (random: they prune
    nothing), the other columns with them."""
    donors = [f"D-{i % 7:03d}" if i % 11 else None for i in range(3000)]
    lots = [f"L{i % 3}" for i in range(3000)]
    sink = io.BytesIO()
    pq.write_table(
        pa.table({"donor_id": donors, "cell_count": range(3000), "lot_number": lots}), sink, row_group_size=1000
    )
    columns = [
        dict(name="donor_id", type="string", sensitivity="quasi_identifier"),
        dict(name="cell_count", type="integer", sensitivity="plain"),
        dict(name="lot_number", type="string", sensitivity="plain"),
    ]
    source = await world.add_file("donors.parquet", sink.getvalue(), columns, "application/vnd.apache.parquet")
    job = await run_export(world, "lowlands", source=source)
    assert job.status is ExportStatus.succeeded, (job.error_code, job.error_message)
    exported = pq.ParquetFile(io.BytesIO(await world.result(job, "lowlands")))
    key = pseudonym_key(world.settings, world.agreements["lowlands"].id)
    table = exported.read()
    assert table.column("donor_id").to_pylist() == [None if d is None else pseudonym(key, d) for d in donors]
    assert table.column("lot_number").to_pylist() == lots
    encodings = {name: exported.metadata.row_group(0).column(i).encodings for i, name in enumerate(table.column_names)}
    assert "RLE_DICTIONARY" not in encodings["cell_count"] and "RLE_DICTIONARY" in encodings["lot_number"]
    chunks = {name: exported.metadata.row_group(0).column(i) for i, name in enumerate(table.column_names)}
    assert not chunks["donor_id"].is_stats_set
    assert (chunks["lot_number"].statistics.min, chunks["lot_number"].statistics.max) == ("L0", "L2")
    assert (chunks["cell_count"].statistics.min, chunks["cell_count"].statistics.max) == (0, 2999)


async def test_a_filtered_parquet_export_names_no_donor_it_leaves_out(world):
    """The source row group's dictionaries name every donor and site in it; the file's may name only those of the
    rows exported."""
    donors = [f"D-{i:03d}" for i in range(600)]
    sites = [f"site {i % 6}" for i in range(600)]  # rows of lot L1 are at sites 1 and 4 only
    sink = io.BytesIO()
    pq.write_table(pa.table({"donor_id": donors, "lot_number": [f"L{i % 3}" for i in range(600)], "site": sites}), sink)
    columns = [
        dict(name="donor_id", type="string", sensitivity="quasi_identifier"),
        dict(name="lot_number", type="string", sensitivity="plain"),
        dict(name="site", type="string", sensitivity="plain"),
    ]
    source = await world.add_file("lots.parquet", sink.getvalue(), columns, "application/vnd.apache.parquet")
    job = await run_export(
        world, "lowlands", source=source, row_filter=[{"column": "lot_number", "op": "eq", "value": "L1"}]
    )
    assert job.status is ExportStatus.succeeded, (job.error_code, job.error_message)
    data = await world.result(job, "lowlands")
    key = pseudonym_key(world.settings, world.agreements["lowlands"].id)
    exported = [pseudonym(key, d) for i, d in enumerate(donors) if i % 3 == 1]
    assert pq.read_table(io.BytesIO(data)).column("donor_id").to_pylist() == exported
    stored = pq.read_table(io.BytesIO(data), read_dictionary=["donor_id", "site"])
    assert {value for chunk in stored.column("donor_id").chunks for value in chunk.dictionary.to_pylist()} == set(
        exported
    )
    assert {value for chunk in stored.column("site").chunks for value in chunk.dictionary.to_pylist()} == {
        "site 1",
        "site 4",
    }
    assert stored.column("site").to_pylist() == [site for i, site in enumerate(sites) if i % 3 == 1]


ROUND_TRIP = pa.table(
    {
        "i8": pa.array([1, None, -128], pa.int8()),
        "i16": pa.array([300, -2, None], pa.int16()),
        "i32": pa.array([None, 70_000, 3], pa.int32()),
        "i64": pa.array([2**40, -1, None], pa.int64()),
        "f32": pa.array([1.5, None, -0.25], pa.float32()),
        "f64": pa.array([None, 3.141592653589793, 1e300], pa.float64()),
        "amount": pa.array([Decimal("12.34"), None, Decimal("-0.01")], pa.decimal128(10, 2)),
        "day": pa.array([date(2024, 2, 29), None, date(1999, 12, 31)], pa.date32()),
        "at_utc": pa.array([0, None, 1_700_000_000_000_000], pa.timestamp("us", tz="UTC")),
        "at_local": pa.array([1_700_000_000_000_000, 0, None], pa.timestamp("us", tz="Europe/Amsterdam")),
        "naive": pa.array([None, 86_400_000, 1], pa.timestamp("ms")),
        "label": pa.array(["α-β", None, ""], pa.string()),
        "flag": pa.array([True, None, False], pa.bool_()),
    }
)
ROUND_TRIP_TYPES = {
    "i8": "int64", "i16": "int64", "i32": "int32", "i64": "int64", "f32": "double", "f64": "double",
    "amount": "decimal(10,2)", "day": "date", "at_utc": "timestamp(us, UTC)",
    "at_local": "timestamp(us, Europe/Amsterdam)", "naive": "timestamp(ms)", "label": "string", "flag": "boolean",
}  # fmt: skip


async def test_every_arrow_type_of_the_sources_round_trips(world, tmp_path):
    columns = [dict(name=n, type=t, sensitivity="plain") for n, t in ROUND_TRIP_TYPES.items()]
    source = await world.add_file("types.parquet", parquet_bytes(ROUND_TRIP), columns, "application/vnd.apache.parquet")
    job = await run_export(world, "lowlands", source=source)
    assert job.status is ExportStatus.succeeded, (job.error_code, job.error_message)
    data = await world.result(job, "lowlands")
    table = pq.read_table(io.BytesIO(data))
    assert table.schema.field("at_local").type == pa.timestamp("us", tz="Europe/Amsterdam")
    assert table.schema.field("amount").type == pa.decimal128(10, 2)
    for name in ROUND_TRIP.column_names:
        assert table.column(name).to_pylist() == ROUND_TRIP.column(name).to_pylist(), name

    file = tmp_path / "types.parquet"
    file.write_bytes(data)
    with duckdb.connect() as db:
        db.execute("SET TimeZone = 'UTC'")
        row = db.execute(
            f"SELECT i64, amount, day, at_local, label, flag FROM read_parquet('{file}') LIMIT 1"
        ).fetchone()
    assert row[:3] == (2**40, Decimal("12.34"), date(2024, 2, 29))
    assert row[3] == ROUND_TRIP.column("at_local")[0].as_py().astimezone(ZoneInfo("UTC"))
    assert row[4:] == ("α-β", True)


async def test_columns_and_filter_narrow_the_export_on_exported_values(world, csv_file):
    job = await run_export(
        world, "lowlands", source=csv_file, columns=["lot_number", "age"],
        row_filter=[{"column": "age", "op": "eq", "value": "40-44"}],
    )  # fmt: skip
    table = pq.read_table(io.BytesIO(await world.result(job, "lowlands")))
    assert table.to_pylist() == [{"lot_number": "L1", "age": "40-44"}, {"lot_number": "L2", "age": "40-44"}]


async def test_the_catalogue_source_flattens_batches_with_their_qc_results(world):
    job = await run_export(world, "lowlands")
    assert job.status is ExportStatus.succeeded, (job.error_code, job.error_message)
    table = pq.read_table(io.BytesIO(await world.result(job, "lowlands")))
    assert "lot_number" in table.column_names and "test_type" in table.column_names
    assert table.schema.field("manufactured_on").type == pa.date32()  # a quasi-identifier: the month
    assert all(d is None or d.day == 1 for d in table.column("manufactured_on").to_pylist())


async def test_exports_and_downloads_are_audited_in_the_providers_log(world, csv_file):
    job = await run_export(world, "lowlands", source=csv_file)
    await world.result(job, "lowlands")
    async with world.database.unit_of_work() as session:
        events = (await session.scalars(select(AuditEvent).where(AuditEvent.target == f"export:{job.id}"))).all()
    assert [(e.action, e.institution) for e in events] == [
        ("export.requested", "leiden-scgt"), ("export.completed", "leiden-scgt"),
        ("export.download_url_issued", "leiden-scgt"),
    ]  # fmt: skip
    assert events[1].details["sha256"] == job.sha256


async def test_bad_rows_are_named_by_line_across_the_csv_readers_blocks(world):
    """A CSV of many reader blocks (one GET chunk each), whose batches are gathered into larger ones for the
    policy: a short row early and a bad value in a later gathered batch are set aside naming their lines; every
    other row is exported."""
    rows = [b"D-%03d,43,2024-03-15,,X,,none,91.5,L1\n" % (i % 500) for i in range(300_000)]
    rows[999] = b"D-001,43\n"
    rows[250_000] = b"D-002,forty,2024-03-15,,X,,none,91.5,L1\n"
    data = CSV.split(b"\n", 1)[0] + b"\n" + b"".join(rows)
    assert len(data) > 2 * BATCH_BYTES
    source = await world.add_file("blocks.csv", data, CSV_COLUMNS)
    job = await run_export(world, "lowlands", source=source, bad_rows=BadRows.quarantine)
    assert job.status is ExportStatus.succeeded, (job.error_code, job.error_message)
    assert (job.rows_written, job.rows_quarantined) == (299_998, 2)
    assert [(q["line"], q["column"]) for q in job.quarantine] == [(1001, None), (250_002, "age")]


@pytest.mark.parametrize("bad_rows", [BadRows.fail, BadRows.quarantine])
async def test_a_malformed_csv_row_fails_naming_line_and_column_or_is_quarantined(world, bad_rows):
    data = CSV + b"D-004,forty,2024-01-01,,X,,none,80,L5\nD-005,41,2024-01-02\n"
    source = await world.add_file(f"bad-{bad_rows.value}.csv", data, CSV_COLUMNS)
    before = world.exported_keys("lowlands")
    job = await run_export(world, "lowlands", source=source, bad_rows=bad_rows)
    if bad_rows is BadRows.fail:
        assert job.status is ExportStatus.failed
        assert (job.error_code, job.error_field) == ("malformed_row", "age")
        assert job.error_message == "line 6, column 'age': 'forty' is not a valid int64"
        assert job.result_key is None and world.exported_keys("lowlands") == before  # nothing half-written
    else:
        assert job.status is ExportStatus.succeeded
        assert (job.rows_written, job.rows_quarantined) == (4, 2)
        assert sorted((q["line"], q["column"] or "") for q in job.quarantine) == [(6, "age"), (7, "")]
