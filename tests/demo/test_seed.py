"""The synthetic consortium: deterministic, realistic, valid; loaded through the service or with COPY."""

import os
import subprocess
from collections import Counter

import pytest
from sqlalchemy import create_engine, text

from cellcommons.catalogue import service
from cellcommons.catalogue.identifiers import din_problems
from cellcommons.catalogue.schemas import BatchIn
from cellcommons.db import Database
from cellcommons.demo.consortium import SCALES, Consortium, Scale
from cellcommons.demo.seed import seed_bulk, seed_through_service


def test_the_same_seed_gives_the_same_consortium_and_another_seed_another():
    first = list(Consortium(SCALES["tiny"], seed=5).records())
    assert first == list(Consortium(SCALES["tiny"], seed=5).records())
    assert first != list(Consortium(SCALES["tiny"], seed=6).records())


def test_the_consortium_is_varied_like_a_real_one():
    records = list(Consortium(SCALES["demo"], seed=2026).records())
    countries = {r.institution["country"] for r in records}
    sectors = {r.institution["sector"] for r in records}
    batches = [b for r in records for b in r.batches]
    datasets = [d for r in records for d in r.datasets]
    assert countries == {"NL", "BE", "CA"} and len(sectors) >= 3
    assert {b["lot_number"][:2] for b in batches} == {"BM", "AT", "UC", "WJ"}
    statuses = Counter(b["release_status"] for b in batches)
    assert statuses["released"] > statuses["rejected"] > 0
    assert {d["access_rights"] for d in datasets} == {"public", "restricted", "non_public"}
    assert {c["term"] for d in datasets for c in d["conditions"]} >= {"DUO:0000042", "DUO:0000006", "DUO:0000007"}
    ages = {d["age_band_start"] for r in records for d in r.donors}
    assert all(a % 5 == 0 for a in ages)
    assert all(din_problems(c["din"]) == [] for r in records for c in r.collections)


async def test_bench_records_pass_the_same_rules_through_the_service(session):
    """The bulk path skips per-row validation; a sample of its records must pass the service's rules."""
    sample_scale = Scale("sample", batches_per_institution=60, datasets_per_institution=15)
    counts = await seed_through_service(session, Consortium(sample_scale, seed=2026), origin="sample")
    assert counts["batch"] == 240 and counts["dataset"] == 60


async def test_bulk_loading_writes_the_same_records_as_the_service(fresh_settings):
    consortium = Consortium(SCALES["tiny"], seed=9)
    database = Database(fresh_settings)
    try:
        async with database.unit_of_work() as session:
            counts = await seed_bulk(session, consortium, origin="bulk")
        async with database.unit_of_work() as session:
            stored = {
                table: await session.scalar(text(f"SELECT count(*) FROM {table}"))
                for table in ("batch", "qc_result", "donor", "collection", "dataset", "dataset_version")
            }
            lot = consortium_records_first_lot(consortium)
            row = (await session.execute(text("SELECT release_status, origin_node FROM batch WHERE lot_number = :l"),
                                         {"l": lot})).one()  # fmt: skip
    finally:
        await database.dispose()
    assert stored == {t: counts[t] for t in stored}
    assert stored["qc_result"] == 10 * stored["batch"] == 160
    assert row.origin_node == "bulk"


def consortium_records_first_lot(consortium):
    return next(consortium.records()).batches[0]["lot_number"]


@pytest.mark.slow
def test_the_seed_command_loads_the_tiny_consortium(fresh_settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLCOMMONS_")}
    env |= {"CELLCOMMONS_ENVIRONMENT": "test", "CELLCOMMONS_DATABASE_URL": fresh_settings.database_url}
    result = subprocess.run(
        ["cellcommons", "seed", "--scale", "tiny"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "16 batch" in result.stdout
    engine = create_engine(fresh_settings.owner_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM batch")).scalar() == 16
    engine.dispose()
    bad = subprocess.run(
        ["cellcommons", "seed", "--scale", "huge"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1 and "unknown scale 'huge'" in bad.stderr


def test_a_generated_batch_is_valid_input():
    batch = next(Consortium(SCALES["tiny"]).records()).batches[0]
    assert service.parse(BatchIn, batch).lot_number == batch["lot_number"]
