"""What a QC result (or a specification criterion) of each test type may carry: UCUM units or a qualitative result.

UCUM is case-sensitive and has no endotoxin unit: `[EU]` is the Ehrlich unit, so endotoxin is written with the
annotation `{EU}`. Units are compared exactly, never coerced.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from cellcommons.catalogue.enums import QualitativeResult, TestType

Q = QualitativeResult


@dataclass(frozen=True)
class ResultKind:
    units: frozenset[str]  # UCUM units a numeric value may carry; empty: the test takes no number
    qualitative: frozenset[QualitativeResult]  # qualitative results it may report; empty: numbers only

    @property
    def numeric(self) -> bool:
        return bool(self.units)


def _kind(units: set[str], qualitative: set[QualitativeResult]) -> ResultKind:
    return ResultKind(frozenset(units), frozenset(qualitative))


_DETECTION = {Q.negative, Q.positive}

RESULT_KINDS: dict[TestType, ResultKind] = {
    TestType.viability: _kind({"%"}, set()),
    TestType.identity_marker: _kind({"%"}, set()),
    TestType.cell_count: _kind({"10*6", "{cells}", "10*6/kg", "10*6/mL"}, set()),
    TestType.endotoxin: _kind({"{EU}/mL"}, set()),
    TestType.potency: _kind({"%", "{ratio}"}, _DETECTION),
    TestType.sterility: _kind(set(), {Q.no_growth, *_DETECTION}),
    TestType.mycoplasma: _kind(set(), {Q.no_growth, *_DETECTION}),
    TestType.adventitious_agent: _kind(set(), _DETECTION),
    TestType.karyotype: _kind(set(), {Q.normal, Q.abnormal}),
    TestType.plastic_adherence: _kind(set(), _DETECTION),
    TestType.differentiation: _kind(set(), _DETECTION),
}

# Spellings a real file uses, with why they are wrong.
_KNOWN_MISTAKES = {
    "EU/mL": "UCUM has no endotoxin unit; write endotoxin units as the annotation {EU}/mL",
    "[EU]/mL": "[EU] is the UCUM Ehrlich unit, not the endotoxin unit; write {EU}/mL",
}


def result_kind(test_type: TestType) -> ResultKind:
    return RESULT_KINDS[test_type]


def unit_problem(test_type: TestType, unit: str) -> str | None:
    """Why `unit` is not allowed for `test_type`, or None when it is."""
    kind = result_kind(test_type)
    if unit in kind.units:
        return None
    if not kind.numeric:
        return f"{test_type} takes a qualitative result, not a number with unit {unit!r}"
    allowed = ", ".join(sorted(kind.units))
    if unit in _KNOWN_MISTAKES:
        reason = _KNOWN_MISTAKES[unit]
    elif same_case_insensitive := [u for u in kind.units if u.lower() == unit.lower()]:
        reason = f"UCUM units are case-sensitive: write {same_case_insensitive[0]!r}"
    else:
        reason = f"allowed: {allowed}"
    return f"unit {unit!r} is not allowed for {test_type} ({reason})"


def range_problem(value: Decimal, unit: str) -> str | None:
    """Why `value` in `unit` is implausible: percentages lie within 0–100, every other quantity is non-negative."""
    if unit == "%" and not 0 <= value <= 100:
        return f"{value} % is outside 0–100 %"
    if value < 0:
        return f"{value} {unit} is negative"
    return None
