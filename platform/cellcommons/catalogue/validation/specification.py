"""Specification criteria: their shape, which QC results they apply to, and re-evaluating a result (rule 2)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from decimal import Decimal

from cellcommons.catalogue import units
from cellcommons.catalogue.enums import Operator, QualitativeResult, TestType
from cellcommons.catalogue.schemas import Finding, QcResultIn, SpecCriterionIn, SpecificationIn
from cellcommons.catalogue.validation.findings import error

_COMPARE: dict[Operator, Callable[[Decimal, Decimal], bool]] = {
    Operator.ge: operator.ge,
    Operator.le: operator.le,
    Operator.lt: operator.lt,
    Operator.gt: operator.gt,
    Operator.eq: operator.eq,
}
# Rule 5: whatever a specification says, these tests release only on a clean result.
CONTAMINATION_TESTS = frozenset({TestType.sterility, TestType.mycoplasma})
CLEAN_RESULTS = frozenset({QualitativeResult.negative, QualitativeResult.no_growth})


def names(values: Iterable[str]) -> str:
    return ", ".join(sorted(values))


def analyte_key(analyte: str | None) -> str:
    """Analytes compare case-insensitively, ignoring spaces and hyphens, with CD79α written CD79a."""
    if analyte is None:
        return ""
    return analyte.casefold().replace("α", "a").replace(" ", "").replace("-", "")


def applies_to(criterion: SpecCriterionIn, result: QcResultIn) -> bool:
    return (
        criterion.test_type == result.test_type
        and (criterion.analyte is None or analyte_key(criterion.analyte) == analyte_key(result.analyte))
        and (criterion.timepoint is None or criterion.timepoint == result.timepoint)
    )


def permitted_results(criterion: SpecCriterionIn) -> frozenset[QualitativeResult] | None:
    """The qualitative results a qualitative criterion accepts; None for a numeric criterion."""
    if criterion.operator == Operator.in_:
        return frozenset(criterion.allowed or ())
    if criterion.expected is not None:
        return frozenset({criterion.expected})
    return None


def shape_problem(criterion: SpecCriterionIn) -> str | None:
    """Why a criterion cannot be evaluated (its operator does not fit its limit/allowed/expected), or None."""
    op = criterion.operator
    if op == Operator.in_:
        if not criterion.allowed or criterion.limit is not None or criterion.expected is not None:
            return "operator 'in' takes a non-empty `allowed` list and no `limit` or `expected`"
    elif op == Operator.eq:
        if (criterion.limit is None) == (criterion.expected is None) or criterion.allowed is not None:
            return "operator '=' takes either a numeric `limit` or a qualitative `expected`, not both"
    elif criterion.limit is None or criterion.allowed is not None or criterion.expected is not None:
        return f"operator {op.value!r} takes a numeric `limit` only"
    return None


def evaluate(criterion: SpecCriterionIn, result: QcResultIn) -> bool | None:
    """Whether `result` meets a well-formed `criterion`; None when the result lacks what the criterion judges."""
    permitted = permitted_results(criterion)
    if permitted is not None:
        return None if result.qualitative is None else result.qualitative in permitted
    if result.value is None or criterion.limit is None:
        return None
    return _COMPARE[criterion.operator](result.value, criterion.limit)


def describe(criterion: SpecCriterionIn) -> str:
    """`viability (post_thaw) ≥ 70 %`, `sterility in {no_growth}`."""
    subject = " ".join(filter(None, [criterion.test_type.value, criterion.analyte]))
    if criterion.timepoint:
        subject += f" ({criterion.timepoint})"
    permitted = permitted_results(criterion)
    if permitted is not None:
        return f"{subject} in {{{names(permitted)}}}"
    return f"{subject} {criterion.operator.value} {criterion.limit} {criterion.unit or ''}".rstrip()


def _criterion_findings(criterion: SpecCriterionIn, path: str) -> list[Finding]:
    problem = shape_problem(criterion)
    if problem:
        return [error("criterion_malformed", f"{path}.operator", f"{describe(criterion)}: {problem}")]
    kind = units.result_kind(criterion.test_type)
    permitted = permitted_results(criterion)
    if permitted is None:
        return _numeric_criterion_findings(criterion, path, kind)
    field = f"{path}.{'allowed' if criterion.operator == Operator.in_ else 'expected'}"
    findings = []
    if wrong := permitted - kind.qualitative:
        can = names(kind.qualitative) if kind.qualitative else "numbers only"
        message = f"{describe(criterion)}: {criterion.test_type} cannot report {names(wrong)} ({can})"
        findings.append(error("qualitative_wrong", field, message))
    if criterion.test_type in CONTAMINATION_TESTS and (unclean := permitted - CLEAN_RESULTS):
        message = f"{describe(criterion)} accepts {names(unclean)}; release needs negative or no growth"
        findings.append(error("criterion_permits_contamination", field, message))
    return findings


def _numeric_criterion_findings(criterion: SpecCriterionIn, path: str, kind: units.ResultKind) -> list[Finding]:
    if not kind.numeric:
        return [
            error(
                "criterion_malformed", f"{path}.limit", f"{criterion.test_type} takes a qualitative result, not a limit"
            )
        ]
    if criterion.unit is None:
        return [error("unit_missing", f"{path}.unit", f"{describe(criterion)}: a numeric limit needs a UCUM unit")]
    if problem := units.unit_problem(criterion.test_type, criterion.unit):
        return [error("unit_wrong", f"{path}.unit", problem)]
    if criterion.limit is not None and (problem := units.range_problem(criterion.limit, criterion.unit)):
        return [error("limit_range", f"{path}.limit", f"{describe(criterion)}: limit {problem}")]
    return []


def validate_specification(spec: SpecificationIn) -> list[Finding]:
    return [
        finding
        for index, criterion in enumerate(spec.criteria)
        for finding in _criterion_findings(criterion, f"criteria[{index}]")
    ]
