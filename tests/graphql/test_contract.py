"""The contract partners code against: the committed schema and the documented operations."""

import subprocess
from pathlib import Path

import pytest
from graphql import parse, validate

from cellcommons.graphql.schema import build_schema, schema_sdl

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "graphql_schema"
OPERATIONS = sorted((CONTRACT / "operations").glob("*.graphql"))


def test_the_committed_schema_is_what_the_code_exports():
    assert (CONTRACT / "schema.graphql").read_text() == schema_sdl(), (
        "run: cellcommons schema export --output graphql_schema/schema.graphql"
    )


def test_the_export_command_prints_the_same_schema(tmp_path):
    out = tmp_path / "schema.graphql"
    subprocess.run(["cellcommons", "schema", "export", "--output", str(out)], check=True, timeout=60)
    printed = subprocess.run(
        ["cellcommons", "schema", "export"], check=True, capture_output=True, text=True, timeout=60
    )
    assert out.read_text() == printed.stdout == schema_sdl()


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda p: p.stem)
def test_each_documented_operation_is_valid_against_the_schema(operation):
    errors = validate(build_schema()._schema, parse(operation.read_text()))
    assert errors == []


async def test_the_documented_operations_run_on_seeded_data(api):
    headers = api.token("leiden-scgt")
    tissue = "UBERON:0002371"
    pages = (CONTRACT / "operations" / "batches_of_a_tissue_source.graphql").read_text()
    result = await api.query(pages, {"tissue": tissue, "first": 2}, headers)
    assert "errors" not in result, result
    batches = result["data"]["batches"]
    assert batches["totalCount"] >= 2 and len(batches["edges"]) == 2
    following = await api.query(pages, {"tissue": tissue, "after": batches["pageInfo"]["endCursor"]}, headers)
    assert len(following["data"]["batches"]["edges"]) == batches["totalCount"] - 2

    listing = await api.query("{ datasets(first: 1) { edges { node { id } } } }", headers=headers)
    dataset_id = listing["data"]["datasets"]["edges"][0]["node"]["id"]
    detail = (CONTRACT / "operations" / "dataset_with_batches_and_qc.graphql").read_text()
    result = await api.query(detail, {"id": dataset_id}, headers)
    assert "errors" not in result, result
    version = result["data"]["node"]["latestVersion"]
    assert version["conditions"] and version["distributions"]
    first_batch = version["batches"]["edges"][0]["node"]
    assert len(first_batch["qcResults"]) == 10 and first_batch["specification"]["criteria"]
