"""Field mappings: which source field feeds which catalogue field, with enum and unit conversions.

Shared by the connectors that read flat records: file drops (a column per field), REDCap (a field per
variable) and Castor EDC (a field per variable). A mapping is declarative, kept as JSON or TOML:

    {"columns": {"lot_id": "lot_number", "product": "product_name", "cells_total": "total_cells",
                 "status": "release_status", "trials": "clinical_trial_ids"},
     "constants": {"cell_type": "CL:0010020", "tissue": "UBERON:0003422"},
     "enums": {"release_status": {"0": "quarantine", "1": "released"}},
     "units": {"total_cells": "10*6", "storage_temperature_c": "K"},
     "qc_results": [{"fields": {"test_type": "viability", "timepoint": "post_thaw", "unit": "%"},
                     "columns": {"value": "viab_fraction", "passed": "viab_ok"}, "units": {"value": "1"}}],
     "updated_at": "last_modified", "deleted": "withdrawn", "list_separator": ";"}

`columns` names the source field of each catalogue field (batch fields; fields it does not name are
ignored); `constants` fill fields the source does not have; `enums` translate coded values (a REDCap radio
button's codes, a Castor option group's values) into the catalogue's, by catalogue field, in QC results too;
`units` says which UCUM unit a numeric source field is in, converted to the catalogue's unit for that field
(for a QC result's `value`, to the result's `unit`). Each `qc_results` entry turns a group of source fields
into one QC result (all empty: no result). `updated_at` names the record's last-modified field, `deleted` a
field that marks it withdrawn (a tombstone). Values the mapping leaves alone are checked by the catalogue's
own rules when the record lands.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cellcommons.catalogue.schemas import BatchIn, QcResultIn
from cellcommons.errors import InvalidInput
from cellcommons.sync.sdk import Record, read_timestamp

# The unit each numeric batch field is stored in (UCUM).
FIELD_UNITS = {
    "total_cells": "{cells}",
    "concentration_1e6_per_ml": "10*6/mL",
    "volume_ml": "mL",
    "dmso_percent": "%",
    "storage_temperature_c": "Cel",
    "max_infusion_ml_per_kg_h": "mL/kg/h",
}
# Conversions a mapping may ask for: (source unit, catalogue unit) → how.
CONVERSIONS: dict[tuple[str, str], Callable[[Decimal], Decimal]] = {
    ("10*6", "{cells}"): lambda v: v * 10**6,
    ("10*9", "{cells}"): lambda v: v * 10**9,
    ("10*3/mL", "10*6/mL"): lambda v: v / 1000,
    ("10*6/L", "10*6/mL"): lambda v: v / 1000,
    ("L", "mL"): lambda v: v * 1000,
    ("uL", "mL"): lambda v: v / 1000,
    ("1", "%"): lambda v: v * 100,  # a fraction
    ("K", "Cel"): lambda v: v - Decimal("273.15"),
    ("[degF]", "Cel"): lambda v: (v - 32) * 5 / 9,
}
BEYOND_ANY_COLUMN = Decimal(10) ** 30  # every numeric column holds less (bigint: under 10^19)
LIST_FIELDS = {"clinical_trial_ids"}  # a source holds them joined by the mapping's separator
TRUE = {"1", "true", "yes", "y", "x"}


def _conversion(source: str, target: str | None, where: str) -> None:
    if source != target and (source, target) not in CONVERSIONS:
        known = ", ".join(f"{a} → {b}" for a, b in CONVERSIONS)
        raise ValueError(f"{where}: no conversion from {source!r} to {target!r} (known: {known})")


class QcColumns(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: dict[str, Any] = {}
    columns: dict[str, str]
    units: dict[str, str] = {}  # only "value": the unit the source gives it in

    @model_validator(mode="after")
    def _known(self) -> QcColumns:
        unknown = sorted((set(self.fields) | set(self.columns)) - set(QcResultIn.model_fields))
        if unknown:
            raise ValueError(f"{', '.join(unknown)} are not QC result fields")
        if set(self.units) - {"value"}:
            raise ValueError("units: only a QC result's value has a unit")
        if "value" in self.units:
            _conversion(self.units["value"], self.fields.get("unit"), "units.value")
        return self


class Mapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    columns: dict[str, str]  # source field → catalogue field
    constants: dict[str, Any] = {}
    enums: dict[str, dict[str, str]] = {}  # catalogue field → {source value: catalogue value}
    units: dict[str, str] = {}  # catalogue field → the unit its source values are in
    qc_results: list[QcColumns] = []
    updated_at: str | None = None
    deleted: str | None = None
    list_separator: str = Field(";", min_length=1)

    @model_validator(mode="after")
    def _known(self) -> Mapping:
        named = set(self.columns.values()) | set(self.constants) | set(self.units)
        unknown = sorted(named - set(BatchIn.model_fields))
        if unknown:
            raise ValueError(f"{', '.join(unknown)} are not batch fields")
        unknown = sorted(set(self.enums) - set(BatchIn.model_fields) - set(QcResultIn.model_fields))
        if unknown:  # a misspelt field would translate nothing, silently
            raise ValueError(f"enums: {', '.join(unknown)} are not batch or QC result fields")
        for field, unit in self.units.items():
            if field not in FIELD_UNITS:
                raise ValueError(f"units: {field} is not a numeric field with a unit")
            _conversion(unit, FIELD_UNITS[field], f"units.{field}")
        return self

    def needed(self) -> set[str]:
        """The source fields the mapping reads."""
        named = set(self.columns) | {c for qc in self.qc_results for c in qc.columns.values()}
        return named | {c for c in (self.updated_at, self.deleted) if c}

    def record(self, raw: dict[str, Any], modified: object = None, modified_field: str = "updated_at") -> Record:
        """The catalogue record of one source row (`modified`: its time, as the source gave it in the field
        `modified_field`, when the mapping names no field)."""
        data = {field: raw[source] for source, field in self.columns.items() if not blank(raw.get(source))}
        for field, value in self.constants.items():
            data.setdefault(field, value)
        data = self._converted(data, self.units)
        for field in LIST_FIELDS & data.keys():
            if isinstance(data[field], str):
                data[field] = [part.strip() for part in data[field].split(self.list_separator) if part.strip()]
        if self.qc_results:
            data["qc_results"] = [
                self._converted(qc.fields | {f: raw[c] for f, c in qc.columns.items() if not blank(raw.get(c))},
                                qc.units, qc.fields.get("unit"))
                for qc in self.qc_results
                if any(not blank(raw.get(c)) for c in qc.columns.values())
            ]  # fmt: skip
        if self.updated_at:
            modified, modified_field = raw.get(self.updated_at), self.updated_at
        stamp, findings = read_timestamp(modified, modified_field)
        deleted = self.deleted is not None and str(raw.get(self.deleted) or "").strip().lower() in TRUE
        return Record(data=data, updated_at=stamp, deleted=deleted, findings=findings)

    def _converted(self, data: dict[str, Any], units: dict[str, str], target: str | None = None) -> dict[str, Any]:
        out = {}
        for field, value in data.items():
            codes = self.enums.get(field)
            if codes is not None and str(value).strip() in codes:
                value = codes[str(value).strip()]
            if field in units:
                value = _in_unit(value, units[field], target or FIELD_UNITS[field])
            out[field] = value
        return out


def _in_unit(value: Any, source: str, target: str) -> Any:
    """The value in the catalogue's unit; a value that is not a number, or not a finite one within reach of any
    column, is left as it is for validation to name (an integer of 10^999999 alone would take minutes)."""
    try:
        number = Decimal(str(value).strip())
        converted = CONVERSIONS[(source, target)](number) if source != target else number
    except ArithmeticError:  # not a number (InvalidOperation, signalling NaN), or beyond Decimal's exponents
        return value
    if not converted.is_finite() or abs(converted) >= BEYOND_ANY_COLUMN:
        return value
    return int(converted) if converted == converted.to_integral_value() else converted


def blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def parse_mapping(content: Any, where: str) -> Mapping:
    """A mapping from its parsed content; InvalidInput naming the place and the problem."""
    try:
        return Mapping.model_validate(content)
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
        path = ".".join(str(p) for p in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        raise InvalidInput(f"mapping {where}: {path + ': ' if path else ''}{message}", field="mapping") from None


def load_mapping(value: Any) -> Mapping:
    """A connector's `mapping` setting: the mapping itself (an object, or JSON text), or the path of a .json or
    .toml file."""
    if isinstance(value, dict):
        return parse_mapping(value, "in the configuration")
    text = str(value or "").strip()
    if not text:
        raise InvalidInput("the source needs a mapping (an object, JSON text or a .json/.toml file)", field="mapping")
    if text.startswith("{"):
        return parse_mapping(_json(text, "in the configuration"), "in the configuration")
    path = Path(text)
    if path.suffix not in {".json", ".toml"}:
        raise InvalidInput(f"mapping file {text} must be .json or .toml", field="mapping")
    try:
        body = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"mapping file {text}: {exc.strerror}", field="mapping") from None
    if path.suffix == ".toml":
        try:
            return parse_mapping(tomllib.loads(body), f"file {text}")
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"mapping file {text} is not TOML: {exc}", field="mapping") from None
    return parse_mapping(_json(body, f"file {text}"), f"file {text}")


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"mapping {where} is not JSON: {exc}", field="mapping") from None
