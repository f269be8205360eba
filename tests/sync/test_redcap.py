"""The `redcap` connector against a local HTTP server that follows the REDCap API's documented request and
response shapes: one form-encoded `POST` endpoint taking `token`, `content` (`metadata`, `record`, `log`),
`format=json`, `type=flat`, `dateRangeBegin` ('YYYY-MM-DD HH:MM:SS', server time), `logtype=record_delete` and
`beginTime` ('YYYY-MM-DD HH:MM'); flat records with every value a string; errors as `{"error": "..."}` with
400/403. It keeps a modification time per record and a deletion log, like REDCap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from tests.sync.conftest import BM_MSC, BONE_MARROW
from tests.sync.partner_api import THROTTLED, Answer, PartnerServer, Request, recording_runtime, register

from cellcommons.catalogue.models import Batch, QcResult
from cellcommons.errors import InvalidInput
from cellcommons.sync.models import QuarantinedRecord, RunStatus, SyncSource

TOKEN = "8E66DB6844D58E990075AFB51658A002"
FIELDS = ["lot_id", "product", "passage", "cells_m", "status", "viab", "viab_ok", "trials", "operator"]
MAPPING = {
    "columns": {"lot_id": "lot_number", "product": "product_name", "passage": "passage", "cells_m": "total_cells",
                "status": "release_status", "trials": "clinical_trial_ids"},
    "constants": {"cell_type": BM_MSC, "tissue": BONE_MARROW},
    "enums": {"release_status": {"0": "quarantine", "1": "released"}},
    "units": {"total_cells": "10*6"},
    "qc_results": [{"fields": {"test_type": "viability", "timepoint": "post_thaw", "unit": "%"},
                    "columns": {"value": "viab", "passed": "viab_ok"}, "units": {"value": "1"}}],
    "list_separator": "|",
}  # fmt: skip


def row(lot: str, **values: str) -> dict[str, str]:
    base = {"lot_id": lot, "product": f"BM-MSC lot {lot}", "passage": "3", "cells_m": "120.5", "status": "0",
            "viab": "0.915", "viab_ok": "1", "trials": "NCT01234567|NCT07654321", "operator": "jd"}  # fmt: skip
    return base | values


class Redcap(PartnerServer):
    def __init__(self):
        self.records: dict[str, tuple[datetime, dict[str, str]]] = {}
        self.log: list[dict[str, str]] = []
        self.token = TOKEN
        super().__init__()

    def put(self, record: dict[str, str], when: datetime | None = None) -> None:
        self.records[record["lot_id"]] = (when or datetime.now(UTC), record)

    def delete(self, lot: str) -> None:
        del self.records[lot]
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
        self.log.append({"timestamp": stamp, "username": "alice", "action": f"Deleted Record {lot}",
                         "details": f"lot_id = '{lot}'", "record": lot})  # fmt: skip

    def answer(self, request: Request) -> Answer:
        form = request.form
        if request.method != "POST" or request.path != "/api/":
            return Answer(404, {"error": "not found"})
        if form.get("token") != self.token:
            return Answer(403, {"error": "You do not have permissions to use the API"})
        if form.get("format") != "json":
            return Answer(400, {"error": "this server answers JSON only"})
        if form.get("content") == "metadata":
            return Answer(200, [{"field_name": f, "form_name": "batch", "field_type": "text"} for f in FIELDS])
        if form.get("content") == "record":
            since = form.get("dateRangeBegin")
            begin = datetime.strptime(since, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) if since else None
            return Answer(200, [r for when, r in self.records.values() if begin is None or when >= begin])
        if form.get("content") == "log" and form.get("logtype") == "record_delete":
            begin = form.get("beginTime", "")
            return Answer(200, [entry for entry in self.log if entry["timestamp"] >= begin])
        return Answer(400, {"error": f"unsupported content {form.get('content')!r}"})


@pytest.fixture
def redcap():
    server = Redcap()
    yield server
    server.close()


async def add_source(env, redcap, mapping=MAPPING) -> None:
    await register(env, "redcap-lots", "redcap", {"url": f"{redcap.url}/api/", "mapping": mapping}, {"token": TOKEN})


async def test_records_land_through_the_mapping_and_bad_ones_are_quarantined(env, redcap, sleeps):
    redcap.put(row("RC-1"))
    redcap.put(row("RC-2", viab="0.88", cells_m="95"))
    redcap.put(row("RC-3", status="7"))  # a code the mapping does not know
    await add_source(env, redcap)
    run = await recording_runtime(env, sleeps).run("redcap-lots")
    assert (run.status, run.read_count, run.upserted_count, run.quarantined_count) == (RunStatus.partial, 3, 2, 1)
    async with env.database.unit_of_work() as session:
        batch = await session.scalar(select(Batch).where(Batch.lot_number == "RC-1"))
        qc = await session.scalar(select(QcResult).where(QcResult.batch_id == batch.id))
        quarantined = await session.scalar(select(QuarantinedRecord))
    assert batch.total_cells == 120_500_000  # 120.5 × 10*6 cells
    assert batch.clinical_trial_ids == ["NCT01234567", "NCT07654321"]
    assert (float(qc.value), qc.unit, qc.passed) == (91.5, "%", True)  # a fraction, as %
    assert quarantined.record_key == "RC-3"
    assert [e["field"] for e in quarantined.errors] == ["release_status"]
    assert {r.form["content"] for r in redcap.requests} == {"metadata", "record"}  # no log on a first read


async def test_incremental_reads_follow_date_range_begin_and_the_deletion_log(env, redcap, sleeps):
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    for lot in ("RC-1", "RC-2", "RC-3"):
        redcap.put(row(lot), when=an_hour_ago)
    await add_source(env, redcap)
    sync = recording_runtime(env, sleeps)
    assert (await sync.run("redcap-lots")).upserted_count == 3

    redcap.put(row("RC-2", passage="4"))
    redcap.delete("RC-3")
    redcap.requests.clear()
    run = await sync.run("redcap-lots")
    assert (run.status, run.read_count, run.upserted_count, run.deleted_count) == (RunStatus.ok, 2, 1, 1)
    assert await env.lots() == ["RC-1", "RC-2"]
    assert await env.scalar(select(Batch.passage).where(Batch.lot_number == "RC-2")) == 4
    asked = {r.form["content"]: r.form for r in redcap.requests}
    assert asked["record"]["dateRangeBegin"] < datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert asked["log"]["logtype"] == "record_delete"
    assert asked["log"]["beginTime"] == asked["record"]["dateRangeBegin"][:16]


async def test_a_429_is_retried_after_the_servers_retry_after(env, redcap, sleeps):
    redcap.put(row("RC-1"))
    redcap.fail_next("/api/", THROTTLED)
    await add_source(env, redcap)
    run = await recording_runtime(env, sleeps).run("redcap-lots")
    assert run.status is RunStatus.ok and await env.lots() == ["RC-1"]
    assert sleeps and sleeps[0] >= 2  # Retry-After: 2


async def test_a_malformed_answer_fails_the_run_with_a_clear_error_and_no_token(env, redcap, sleeps):
    redcap.put(row("RC-1"))
    redcap.fail_next("/api/", Answer(200, "<html>REDCap is down for maintenance</html>"))
    await add_source(env, redcap)
    run = await recording_runtime(env, sleeps).run("redcap-lots")
    assert run.status is RunStatus.failed
    assert run.error == f"SourceError: {redcap.url}/api/: the answer is not JSON"
    redcap.fail_next("/api/", Answer(200, {"not": "a list"}))
    run = await recording_runtime(env, sleeps).run("redcap-lots")
    assert run.error == "SourceError: REDCap's metadata export is not a list of objects"


async def test_a_token_revoked_mid_run_stops_the_run_and_names_redcaps_reason(env, redcap, sleeps):
    redcap.put(row("RC-1"))
    await add_source(env, redcap)
    redcap.fail_next("/api/", Answer(200, [{"field_name": f} for f in FIELDS]))  # metadata still answers
    redcap.token = "REVOKED"
    run = await recording_runtime(env, sleeps).run("redcap-lots")
    assert run.status is RunStatus.failed
    assert run.error == f"SourceError: {redcap.url}/api/: HTTP 403: You do not have permissions to use the API"
    assert TOKEN not in run.error and await env.lots() == []


async def test_the_record_id_field_must_map_to_the_lot_number(env, redcap, sleeps):
    mapping = {**MAPPING, "columns": {k: v for k, v in MAPPING["columns"].items() if k != "lot_id"}
               | {"product": "lot_number"}}  # fmt: skip
    await add_source(env, redcap, mapping)
    run = await recording_runtime(env, sleeps).run("redcap-lots")
    assert run.status is RunStatus.failed
    assert run.error == "the mapping must map the project's record ID field 'lot_id' to lot_number"


async def test_a_redcap_clock_behind_ours_loses_no_change(env, redcap, sleeps):
    behind = timedelta(minutes=5)  # REDCap stamps changes with its own clock, 5 minutes behind this machine's
    redcap.put(row("RC-1"), when=datetime.now(UTC) - behind)
    await add_source(env, redcap)
    sync = recording_runtime(env, sleeps)
    assert (await sync.run("redcap-lots")).upserted_count == 1
    redcap.put(row("RC-2"), when=datetime.now(UTC) - behind)  # changed after that read began, in REDCap's time
    run = await sync.run("redcap-lots")
    assert (run.status, run.upserted_count) == (RunStatus.ok, 1)
    assert await env.lots() == ["RC-1", "RC-2"]
    read_from = datetime.strptime(redcap.requests[-1].form["dateRangeBegin"], "%Y-%m-%d %H:%M:%S")
    assert datetime.now(UTC).replace(tzinfo=None) - read_from > timedelta(minutes=10)  # the default overlap


@pytest.mark.parametrize(
    ("config", "secrets", "field", "message"),
    [
        ({"page_size": "0"}, {"token": TOKEN}, "page_size", "page_size must be a whole number of at least 1, not '0'"),
        ({"page_size": "many"}, {"token": TOKEN}, "page_size",
         "page_size must be a whole number of at least 1, not 'many'"),
        ({"overlap_minutes": "0"}, {"token": TOKEN}, "overlap_minutes",
         "overlap_minutes must be a whole number of at least 1, not '0'"),
        ({"timezone": "Mars/Olympus"}, {"token": TOKEN}, "timezone", "'Mars/Olympus' is not a time zone"),
        ({}, {}, "secrets", "the redcap connector needs the secret token"),
        ({"mapping": '{"columns": {"a": "nope"}}'}, {"token": TOKEN}, "mapping",
         "mapping in the configuration: nope are not batch fields"),
        ({"mapping": "/nowhere/redcap-lots.toml"}, {"token": TOKEN}, "mapping",
         "mapping file /nowhere/redcap-lots.toml: No such file or directory"),
    ],
)  # fmt: skip
async def test_adding_a_source_checks_its_configuration_as_a_run_would(env, redcap, config, secrets, field, message):
    with pytest.raises(InvalidInput) as refused:
        await register(env, "redcap-lots", "redcap", {"url": f"{redcap.url}/api/", "mapping": MAPPING} | config,
                       secrets)  # fmt: skip
    assert (refused.value.field, refused.value.message) == (field, message)
    assert await env.count(SyncSource) == 0


async def test_an_unreadable_modification_time_quarantines_its_record(env, redcap, sleeps):
    redcap.put(row("RC-1", operator="2026-11-20 10:00:00"))
    redcap.put(row("RC-2", operator="yesterday"))
    await add_source(env, redcap, {**MAPPING, "updated_at": "operator"})
    run = await recording_runtime(env, sleeps).run("redcap-lots")
    assert (run.status, run.upserted_count, run.quarantined_count) == (RunStatus.partial, 1, 1)
    assert await env.lots() == ["RC-1"]
    async with env.database.unit_of_work() as session:
        held = await session.scalar(select(QuarantinedRecord))
    assert held.record_key == "RC-2" and [(e["code"], e["field"]) for e in held.errors] == [
        ("unreadable_timestamp", "operator")
    ]


@pytest.mark.parametrize("cells", ["Infinity", "-inf", "sNaN", "NaN", "1e999999999", "1e40"])
async def test_a_number_beyond_any_unit_conversion_quarantines_its_record(env, redcap, sleeps, cells):
    redcap.put(row("RC-1"))
    redcap.put(row("RC-2", cells_m=cells))  # total_cells, in 10*6 cells
    await add_source(env, redcap)
    run = await recording_runtime(env, sleeps).run("redcap-lots")
    assert (run.status, run.error, run.upserted_count, run.quarantined_count) == (RunStatus.partial, None, 1, 1)
    async with env.database.unit_of_work() as session:
        held = await session.scalar(select(QuarantinedRecord))
    assert held.record_key == "RC-2" and [(e["code"], e["field"]) for e in held.errors] == [
        ("invalid_value", "total_cells")
    ]
    assert held.payload["total_cells"] == cells  # as the source gave it
