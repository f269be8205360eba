"""Records PostgreSQL could not store as read (NUL characters, lone surrogates, numbers beyond their column, keys
beyond the ledger's) are findings of their record: it is quarantined, with field and reason, and the rest of its
page lands. Before, one such record failed its page's statement, so the page never landed, on every run."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import select, text
from tests.sync.conftest import batch_record, memory_connector

from cellcommons.outages import DATABASE_DOWN
from cellcommons.sync import targets
from cellcommons.sync.models import QuarantinedRecord, RunStatus


async def _held(env) -> list[QuarantinedRecord]:
    async with env.database.unit_of_work() as session:
        return list((await session.scalars(select(QuarantinedRecord))).all())


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"product_name": "BM-MSC\x00lot"}, "product_name", "invalid_value"),
        ({"product_name": "BM-MSC\ud800lot"}, "product_name", "invalid_value"),
        ({"total_cells": 10**20}, "total_cells", "invalid_value"),  # bigint
        ({"concentration_1e6_per_ml": "123456789"}, "concentration_1e6_per_ml", "invalid_value"),  # numeric(12, 4)
        ({"containers": 2**40}, "containers", "invalid_value"),  # integer
        ({"volume_ml": "1e-20000"}, "volume_ml", "invalid_value"),  # PostgreSQL cannot read it
        ({"qc_results": [{"test_type": "viability", "value": "1e13", "unit": "%"}]}, "qc_results[0].value",
         "invalid_value"),  # numeric(18, 6)
        ({"donors": ["D\x00"]}, "donors[0]", "invalid_value"),
    ],
)  # fmt: skip
async def test_a_value_its_column_cannot_hold_quarantines_its_record_and_the_page_lands(env, fields, field, code):
    await env.add_source()
    rows = [batch_record("A1"), batch_record("A2", **fields), batch_record("A3")]
    run = await env.runtime(memory_connector(rows)).run("lims")
    assert (run.status, run.error, run.upserted_count, run.quarantined_count) == (RunStatus.partial, None, 2, 1)
    assert await env.lots() == ["A1", "A3"]
    (held,) = await _held(env)
    assert held.record_key == "A2" and [(e["field"], e["code"]) for e in held.errors] == [(field, code)]


async def test_a_quarantined_payload_keeps_nul_characters_and_lone_surrogates_escaped(env):
    await env.add_source()
    bad = batch_record("A2", product_name="bad\x00name", cryoprotectant="DMSO\ud800", passage=999, **{"k\x00": 1})
    run = await env.runtime(memory_connector([batch_record("A1"), bad])).run("lims")
    assert (run.status, run.error, run.quarantined_count) == (RunStatus.partial, None, 1)
    (held,) = await _held(env)
    assert held.payload["product_name"] == "bad\\x00name" and held.payload["cryoprotectant"] == "DMSO\\ud800"
    assert held.payload["k\\x00"] == 1
    assert {e["field"] for e in held.errors} == {"product_name", "cryoprotectant", "passage", "k\\x00"}


@pytest.mark.parametrize(
    ("key", "code", "reason"),
    [
        ("Z" * 201, "too_long", "lot_number has 201 characters; a key has at most 200"),
        ("Z\x00", "invalid_value", "lot_number contains a NUL character or a lone surrogate"),
        ("Z\udc80", "invalid_value", "lot_number contains a NUL character or a lone surrogate"),
    ],
)
@pytest.mark.parametrize("deleted", [True, False])
async def test_a_key_the_ledger_cannot_hold_is_a_finding(env, key, code, reason, deleted):
    await env.add_source()
    bad = {"lot_number": key, "_deleted": True} if deleted else batch_record(key)
    run = await env.runtime(memory_connector([batch_record("A1"), bad], full_snapshot=True)).run("lims")
    assert (run.status, run.error, run.upserted_count, run.quarantined_count) == (RunStatus.partial, None, 1, 1)
    (held,) = await _held(env)
    assert held.record_key is None and held.deleted is deleted
    assert held.errors == [{"code": code, "severity": "error", "field": "lot_number", "message": reason}]


async def test_a_statement_the_database_refuses_fails_the_run_without_its_sql_or_values(env, monkeypatch):
    async def refused(self, session, scope, records):
        await session.execute(text("SELECT CAST(:value AS integer)"), {"value": records[0].row["product_name"]})

    monkeypatch.setattr(targets.BatchTarget, "upsert", refused)
    await env.add_source()
    run = await env.runtime(memory_connector([batch_record("A1", product_name="Patient Jane Doe")])).run("lims")
    assert run.status is RunStatus.failed
    assert run.error == "the database refused a statement of the run: InvalidTextRepresentation (SQLSTATE 22P02)"


@pytest.mark.parametrize("stamp", ["31/12/2025", "yesterday"])
@pytest.mark.parametrize("deleted", [False, True])
async def test_an_unreadable_source_time_quarantines_its_record_and_a_replay_keeps_it_held(env, stamp, deleted):
    await env.add_source()
    bad = {"lot_number": "A2", "_deleted": True} if deleted else batch_record("A2")
    rows = [batch_record("A1", modified="2026-01-01T00:00:00Z"), bad | {"modified": stamp}]
    runtime = env.runtime(memory_connector(rows))
    run = await runtime.run("lims")
    assert (run.status, run.error, run.upserted_count, run.quarantined_count) == (RunStatus.partial, None, 1, 1)
    (held,) = await _held(env)
    assert held.record_key == "A2" and held.errors == [{
        "code": "unreadable_timestamp", "severity": "error", "field": "modified",
        "message": f"{stamp!r} is not an ISO 8601 timestamp",
    }]  # fmt: skip
    # Without its time it cannot be ordered against what lands later: only a new read with a time lands it.
    replay = await runtime.replay_quarantine("lims")
    assert (replay.upserted_count, replay.quarantined_count) == (0, 1) and await env.lots() == ["A1"]


async def test_a_connection_lost_mid_run_fails_the_run_as_an_outage(env, monkeypatch):
    async def lost(self, session, scope, records):
        raise psycopg.OperationalError(f"server closed the connection unexpectedly ({records[0].row['product_name']})")

    monkeypatch.setattr(targets.BatchTarget, "upsert", lost)
    await env.add_source()
    run = await env.runtime(memory_connector([batch_record("A1", product_name="Patient Jane Doe")])).run("lims")
    assert (run.status, run.error) == (RunStatus.failed, DATABASE_DOWN)
