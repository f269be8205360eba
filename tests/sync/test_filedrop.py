"""The filedrop connector against the S3 server: CSV, XLSX and Parquet under a prefix, each file once by ETag."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
from openpyxl import Workbook
from sqlalchemy import select
from tests.sync.conftest import BM_MSC, BONE_MARROW, SLUG

from cellcommons.catalogue.models import Batch, QcResult
from cellcommons.sync import service
from cellcommons.sync.models import QuarantinedRecord, RunStatus, SyncSource
from cellcommons.sync.runtime import SyncRuntime

PREFIX = "leiden/lims/"
MAPPING = {
    "columns": {"Lot": "lot_number", "Product": "product_name", "Passage": "passage", "Trials": "clinical_trial_ids"},
    "constants": {"cell_type": BM_MSC, "tissue": BONE_MARROW},
    "qc_results": [
        {"fields": {"test_type": "viability", "timepoint": "post_thaw", "unit": "%"},
         "columns": {"value": "Viability (%)"}},
        {"fields": {"test_type": "sterility"}, "columns": {"qualitative": "Sterility"}},
    ],
}  # fmt: skip
HEADER = ["Lot", "Product", "Passage", "Trials", "Viability (%)", "Sterility", "Operator"]


def rows(prefix: str, n: int) -> list[list]:
    return [[f"{prefix}-{i}", f"BM-MSC {prefix} {i}", 3, "NCT01234567", 91.5, "no_growth", "jd"] for i in range(n)]


def put(object_store, bucket: str, key: str, data: bytes) -> None:
    object_store.put_stream(bucket, key, io.BytesIO(data), len(data))


def csv_bytes(lines: list[list]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows([HEADER, *lines])
    return out.getvalue().encode()


def xlsx_bytes(lines: list[list]) -> bytes:
    book = Workbook()
    for line in [HEADER, *lines]:
        book.active.append(line)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def parquet_bytes(lines: list[list]) -> bytes:
    table = pa.table({name: [line[i] for line in lines] for i, name in enumerate(HEADER)})
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


async def add_filedrop(env, bucket: str, secrets: dict | None = None) -> None:
    async with env.database.unit_of_work() as session:
        await service.add_source(session, env.settings, name="lims", connector="filedrop", institution_slug=SLUG,
                                 schedule="*/10 * * * *", config={"bucket": bucket, "prefix": PREFIX},
                                 secrets=secrets or {})  # fmt: skip


async def test_csv_xlsx_and_parquet_files_land_once_each(env, object_store, bucket):
    put(object_store, bucket, PREFIX + "mapping.json", json.dumps(MAPPING).encode())
    put(object_store, bucket, PREFIX + "a.csv", csv_bytes(rows("CSV", 1500)))  # two pages: 1000 + 500
    put(object_store, bucket, PREFIX + "b.xlsx", xlsx_bytes(rows("XLS", 20)))
    put(object_store, bucket, PREFIX + "c.parquet", parquet_bytes(rows("PAR", 30)))
    put(object_store, bucket, PREFIX + "notes.txt", b"not a data file")
    await add_filedrop(env, bucket)
    runtime = SyncRuntime(env.database, env.settings)  # the connector comes from its entry point

    run = await runtime.run("lims")
    assert run.status is RunStatus.ok, run.error
    assert (run.read_count, run.upserted_count) == (1550, 1550)
    async with env.database.unit_of_work() as session:
        batch = await session.scalar(select(Batch).where(Batch.lot_number == "XLS-7"))
        results = (await session.scalars(select(QcResult).where(QcResult.batch_id == batch.id))).all()
    assert batch.passage == 3 and batch.clinical_trial_ids == ["NCT01234567"]
    assert sorted((r.test_type.value, str(r.value or r.qualitative)) for r in results) == [
        ("sterility", "no_growth"), ("viability", "91.500000")
    ]  # fmt: skip

    again = await runtime.run("lims")
    assert again.read_count == 0  # every file is known by its ETag

    changed = rows("CSV", 2)
    changed[1][4] = 250  # viability above 100 %: this row is quarantined, the rest of the file lands
    put(object_store, bucket, PREFIX + "a.csv", csv_bytes(changed))
    third = await runtime.run("lims")
    assert (third.status, third.read_count, third.quarantined_count) == (RunStatus.partial, 2, 1)
    held = await env.scalar(select(QuarantinedRecord))
    assert held.record_key == "CSV-1" and held.errors[0]["field"] == "qc_results[0].value"


async def test_a_mapping_naming_an_unknown_field_fails_the_run_with_a_clear_error(env, object_store, bucket):
    put(object_store, bucket, PREFIX + "mapping.json", json.dumps({"columns": {"Lot": "lot_no"}}).encode())
    put(object_store, bucket, PREFIX + "a.csv", csv_bytes(rows("CSV", 3)))
    await add_filedrop(env, bucket)
    run = await SyncRuntime(env.database, env.settings).run("lims")
    assert run.status is RunStatus.failed
    assert run.error == f"mapping file {PREFIX}mapping.json: lot_no are not batch fields"


async def test_the_cli_adds_runs_and_lists_without_ever_showing_a_secret(env, object_store, bucket):
    put(object_store, bucket, PREFIX + "mapping.json", json.dumps(MAPPING).encode())
    put(object_store, bucket, PREFIX + "a.csv", csv_bytes(rows("CSV", 5)))
    secret = "s3cr3t-value-never-shown"
    settings = env.settings
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CELLCOMMONS_")} | {
        "CELLCOMMONS_ENVIRONMENT": "test",
        "CELLCOMMONS_DATABASE_URL": settings.database_url,
        "CELLCOMMONS_S3_ENDPOINT": settings.s3_endpoint,
        "CELLCOMMONS_S3_ACCESS_KEY": settings.s3_access_key,
        "CELLCOMMONS_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
        "LIMS_TOKEN": secret,
        "COLUMNS": "250",
    }

    def cellcommons(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["cellcommons", *args], env=environment, capture_output=True, text=True, timeout=120)

    config = ["--config", f"bucket={bucket}", "--config", f"prefix={PREFIX}", "--secret", "token=LIMS_TOKEN"]
    added = cellcommons("sync", "add-source", "lims", "filedrop", SLUG, "--schedule", "*/5 * * * *", *config)
    assert added.returncode == 0, added.stderr
    ran = cellcommons("sync", "run", "lims")
    assert ran.returncode == 0, ran.stderr
    assert "lims: ok — read 5, upserted 5, quarantined 0, deleted 0" in ran.stdout
    listed = cellcommons("sync", "sources")
    history = cellcommons("sync", "runs", "lims")
    assert "token" in listed.stdout and "filedrop" in listed.stdout and "ok" in history.stdout
    for output in (added, ran, listed, history):
        assert secret not in output.stdout + output.stderr
    sealed = await env.scalar(select(SyncSource.sealed_secrets))
    assert secret not in sealed

    bad = cellcommons("sync", "add-source", "other", "filedrop", SLUG, "--schedule", "hourly")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "error: 'hourly' is not a five-field cron expression (e.g. '*/15 * * * *')"
