"""The shared field mapping of the filedrop, REDCap and Castor connectors: conversions and clear errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from cellcommons.errors import InvalidInput
from cellcommons_connectors.mapping import load_mapping

MAPPING = {
    "columns": {"Lot": "lot_number", "Cells (10^9)": "total_cells", "Temp (F)": "storage_temperature_c",
                "Volume (L)": "volume_ml", "Status": "release_status"},
    "enums": {"release_status": {"Q": "quarantine"}, "qualitative": {"-": "negative"}},
    "units": {"total_cells": "10*9", "storage_temperature_c": "[degF]", "volume_ml": "L"},
    "qc_results": [
        {"fields": {"test_type": "viability", "unit": "%"}, "columns": {"value": "Viable"}, "units": {"value": "1"}},
        {"fields": {"test_type": "mycoplasma"}, "columns": {"qualitative": "Myco"}},
    ],
    "updated_at": "Changed", "deleted": "Gone",
}  # fmt: skip
ROW = {"Lot": "L-1", "Cells (10^9)": "1.25", "Temp (F)": "-320.8", "Volume (L)": "0.05", "Status": "Q",
       "Viable": "0.9", "Myco": "-", "Changed": "2026-11-20T10:00:00+00:00", "Gone": ""}  # fmt: skip


def test_enum_and_unit_conversions_apply_to_batch_fields_and_qc_results():
    record = load_mapping(MAPPING).record(ROW)
    assert record.data == {
        "lot_number": "L-1", "total_cells": 1_250_000_000, "storage_temperature_c": Decimal("-196"),
        "volume_ml": 50, "release_status": "quarantine",
        "qc_results": [{"test_type": "viability", "unit": "%", "value": 90},
                       {"test_type": "mycoplasma", "qualitative": "negative"}],
    }  # fmt: skip
    assert record.updated_at == datetime(2026, 11, 20, 10, tzinfo=UTC) and not record.deleted
    assert load_mapping(MAPPING).record(ROW | {"Gone": "yes"}).deleted


def test_a_value_that_is_not_a_number_is_left_for_validation_to_name():
    assert load_mapping(MAPPING).record(ROW | {"Cells (10^9)": "many"}).data["total_cells"] == "many"


def test_a_mapping_loads_from_a_toml_or_json_file(tmp_path):
    toml = tmp_path / "mapping.toml"
    toml.write_text('[columns]\nLot = "lot_number"\n[units]\nvolume_ml = "uL"\n')
    assert load_mapping(str(toml)).record({"Lot": "L-2"}).data == {"lot_number": "L-2"}
    (tmp_path / "mapping.json").write_text(json.dumps(MAPPING))
    assert load_mapping(str(tmp_path / "mapping.json")).units["total_cells"] == "10*9"


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"columns": {"Lot": "lot_no"}}, "mapping in the configuration: lot_no are not batch fields"),
        ({"columns": {"Lot": "lot_number"}, "units": {"volume_ml": "gal"}},
         "mapping in the configuration: units.volume_ml: no conversion from 'gal' to 'mL'"),
        ({"columns": {"Lot": "lot_number"}, "units": {"passage": "1"}},
         "mapping in the configuration: units: passage is not a numeric field with a unit"),
        ({"columns": {"Lot": "lot_number"}, "qc_results": [{"columns": {"score": "S"}}]},
         "mapping in the configuration: qc_results.0: score are not QC result fields"),
        ({"columns": {"Lot": "lot_number"}, "enums": {"release_stauts": {"1": "released"}}},
         "mapping in the configuration: enums: release_stauts are not batch or QC result fields"),
        ({"columns": {"Lot": "lot_number"}, "list_separator": ""},
         "mapping in the configuration: list_separator: String should have at least 1 character"),
        ("{not json", "mapping in the configuration is not JSON"),
        ("mapping.yaml", "mapping file mapping.yaml must be .json or .toml"),
        ("", "the source needs a mapping"),
    ],
)  # fmt: skip
def test_a_bad_mapping_is_refused_naming_where_and_why(mapping, message):
    with pytest.raises(InvalidInput) as refused:
        load_mapping(mapping)
    assert refused.value.message.startswith(message) and refused.value.field == "mapping"
