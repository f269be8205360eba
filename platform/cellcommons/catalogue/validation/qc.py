"""QC results: their own shape (units, rule 3), agreement with the specification (rule 2) and release (rules 2, 5)."""

from __future__ import annotations

from collections.abc import Sequence

from cellcommons.catalogue import units
from cellcommons.catalogue.enums import Operator, ReleaseStatus, ResultStatus, TestType
from cellcommons.catalogue.schemas import Finding, QcResultIn, SpecCriterionIn, SpecificationIn
from cellcommons.catalogue.validation.findings import error
from cellcommons.catalogue.validation.specification import (
    CLEAN_RESULTS,
    CONTAMINATION_TESTS,
    applies_to,
    describe,
    evaluate,
    names,
    permitted_results,
    shape_problem,
)

RELEASED = frozenset({ReleaseStatus.released, ReleaseStatus.conditionally_released})
# Rule 5 applies even when a specification forgets these tests.
UNIVERSAL_RELEASE_CRITERIA = tuple(
    SpecCriterionIn(test_type=test_type, operator=Operator.in_, allowed=sorted(CLEAN_RESULTS))
    for test_type in sorted(CONTAMINATION_TESTS)
)
# Rule 3: a viability without its timepoint (post-thaw vs pre-cryo) cannot be judged.
TIMEPOINT_REQUIRED = frozenset({TestType.viability})
_RANGE_CODES = {TestType.viability: "viability_range"}


def result_findings(index: int, result: QcResultIn) -> list[Finding]:
    """Problems of one QC result on its own, whatever the specification."""
    path = f"qc_results[{index}]"
    findings = []
    if result.status == ResultStatus.pending and result.passed is not None:
        findings.append(
            error("pending_result_judged", f"{path}.passed", "a pending result cannot have passed or failed")
        )
    if result.status == ResultStatus.final and result.value is None and result.qualitative is None:
        findings.append(
            error("result_missing", path, f"final {result.test_type} result has no value or qualitative result")
        )
    findings += _value_findings(result, path)
    kind = units.result_kind(result.test_type)
    if result.qualitative is not None and result.qualitative not in kind.qualitative:
        can = names(kind.qualitative) if kind.qualitative else "numbers only"
        message = f"{result.test_type} cannot report {result.qualitative} ({can})"
        findings.append(error("qualitative_wrong", f"{path}.qualitative", message))
    if result.test_type in TIMEPOINT_REQUIRED and result.timepoint is None:
        findings.append(error("timepoint_missing", f"{path}.timepoint", f"{result.test_type} needs its timepoint"))
    return findings


def _value_findings(result: QcResultIn, path: str) -> list[Finding]:
    kind = units.result_kind(result.test_type)
    if not kind.numeric:
        if result.value is not None:
            message = f"{result.test_type} takes a qualitative result ({names(kind.qualitative)}), not {result.value}"
            return [error("result_kind_wrong", f"{path}.value", message)]
        if result.unit is not None:
            return [error("unit_wrong", f"{path}.unit", f"{result.test_type} takes no unit (got {result.unit!r})")]
        return []
    if result.value is None:
        return []
    if result.unit is None:
        return [error("unit_missing", f"{path}.unit", f"{result.test_type} value {result.value} has no unit")]
    if problem := units.unit_problem(result.test_type, result.unit):
        return [error("unit_wrong", f"{path}.unit", problem)]
    if problem := units.range_problem(result.value, result.unit):
        code = _RANGE_CODES.get(result.test_type, "value_range")
        return [error(code, f"{path}.value", f"{result.test_type}: {problem}")]
    return []


def reported(result: QcResultIn) -> str:
    """What the result says, for messages: `no_growth`, `94.99 %`."""
    return str(result.qualitative or f"{result.value} {result.unit or ''}".rstrip())


def usable_unit(result: QcResultIn) -> bool:
    """A number whose unit is right for its test type; other numbers are reported and never compared."""
    return result.unit is not None and units.unit_problem(result.test_type, result.unit) is None


def comparable(criterion: SpecCriterionIn, result: QcResultIn) -> bool:
    """Whether re-evaluating makes sense: a number is only compared with a limit in the same unit."""
    if permitted_results(criterion) is not None or result.value is None:
        return True
    return usable_unit(result) and result.unit == criterion.unit


def well_formed(criteria: Sequence[SpecCriterionIn]) -> list[SpecCriterionIn]:
    # A malformed criterion is the specification's finding (validate_specification), not every batch's.
    return [criterion for criterion in criteria if shape_problem(criterion) is None]


def final_results(results: Sequence[QcResultIn]) -> list[tuple[int, QcResultIn]]:
    return [(index, result) for index, result in enumerate(results) if result.status == ResultStatus.final]


def consistency_findings(results: Sequence[QcResultIn], spec: SpecificationIn) -> list[Finding]:
    """Rule 2: each final result re-evaluated against the criteria that apply; a stored verdict must agree."""
    criteria = well_formed(spec.criteria)
    findings = []
    for index, result in final_results(results):
        path = f"qc_results[{index}]"
        verdicts = []
        for criterion in (c for c in criteria if applies_to(c, result)):
            if not comparable(criterion, result):
                if usable_unit(result):
                    message = f"unit {result.unit!r} differs from the specification's: {describe(criterion)}"
                    findings.append(error("unit_spec_mismatch", f"{path}.unit", message))
                continue
            verdict = evaluate(criterion, result)
            if verdict is None and (result.value is not None or result.qualitative is not None):
                message = f"{result.test_type} result cannot be judged against {describe(criterion)}"
                findings.append(error("result_not_comparable", path, message))
            elif verdict is not None:
                verdicts.append((criterion, verdict))
        if verdicts and result.passed is not None and result.passed != all(v for _, v in verdicts):
            judged = "; ".join(f"{describe(c)}: {'pass' if v else 'fail'}" for c, v in verdicts)
            message = f"stored passed={result.passed} but the specification gives {judged}"
            findings.append(error("pass_fail_inconsistent", f"{path}.passed", message))
    return findings


def release_criteria(spec: SpecificationIn | None) -> list[SpecCriterionIn]:
    mandatory = [criterion for criterion in well_formed(spec.criteria) if criterion.mandatory] if spec else []
    covered = {criterion.test_type for criterion in mandatory}
    return mandatory + [c for c in UNIVERSAL_RELEASE_CRITERIA if c.test_type not in covered]


def release_findings(
    status: ReleaseStatus, results: Sequence[QcResultIn], spec: SpecificationIn | None
) -> list[Finding]:
    """Rules 2 and 5 for a released or conditionally released batch."""
    if status not in RELEASED:
        return []
    findings = [
        finding for criterion in release_criteria(spec) for finding in _criterion_release(status, results, criterion)
    ]
    if status == ReleaseStatus.conditionally_released and all(r.status == ResultStatus.final for r in results):
        message = "conditional release is only allowed while a QC result is pending, and none is"
        findings.append(error("conditional_release_nothing_pending", "release_status", message))
    return findings


def _criterion_release(
    status: ReleaseStatus, results: Sequence[QcResultIn], criterion: SpecCriterionIn
) -> list[Finding]:
    matching = [(index, result) for index, result in enumerate(results) if applies_to(criterion, result)]
    pending = [index for index, result in matching if result.status == ResultStatus.pending]
    final = [(index, result) for index, result in matching if result.status == ResultStatus.final]
    findings = []
    if status == ReleaseStatus.released:
        code = "release_sterility_pending" if criterion.test_type in CONTAMINATION_TESTS else "release_result_pending"
        for index in pending:
            message = f"batch is released while its {describe(criterion)} result is still pending"
            findings.append(error(code, f"qc_results[{index}].status", message))
    if not final and not pending:
        message = f"{status} batch has no final result for the mandatory test {describe(criterion)}"
        findings.append(error("release_mandatory_test_missing", "qc_results", message))
    for index, result in final:
        if comparable(criterion, result) and evaluate(criterion, result) is False:
            message = f"{status} batch failed the mandatory test {describe(criterion)} with {reported(result)}"
            findings.append(error("release_mandatory_test_failed", f"qc_results[{index}]", message))
    return findings
