"""Rule 1: the ISCT minimal MSC criteria (Dominici 2006), checked only where a batch or dataset claims them.

Each requirement is met by any of its alternatives (CD14 or CD11b); every measured alternative must comply,
and a requirement with no final result at all is missing evidence — an unsupported claim either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from cellcommons.catalogue.enums import Operator, QualitativeResult, TestType
from cellcommons.catalogue.schemas import Finding, QcResultIn, SpecCriterionIn
from cellcommons.catalogue.validation.findings import error
from cellcommons.catalogue.validation.qc import comparable, final_results, reported
from cellcommons.catalogue.validation.specification import applies_to, describe, evaluate


@dataclass(frozen=True)
class IsctRequirement:
    title: str
    failed_code: str
    alternatives: tuple[SpecCriterionIn, ...]


def _markers(analytes: Sequence[str], op: Operator, limit: int) -> tuple[SpecCriterionIn, ...]:
    return tuple(
        SpecCriterionIn(test_type=TestType.identity_marker, analyte=a, operator=op, limit=Decimal(limit), unit="%")
        for a in analytes
    )


def _positive(test_type: TestType, analyte: str | None = None) -> tuple[SpecCriterionIn, ...]:
    return (
        SpecCriterionIn(
            test_type=test_type, analyte=analyte, operator=Operator.eq, expected=QualitativeResult.positive
        ),
    )


ISCT_REQUIREMENTS = (
    *(
        IsctRequirement(f"{m} ≥ 95 %", "isct_marker_below", _markers([m], Operator.ge, 95))
        for m in ("CD73", "CD90", "CD105")
    ),
    *(
        IsctRequirement(f"{' or '.join(ms)} ≤ 2 %", "isct_marker_above", _markers(ms, Operator.le, 2))
        for ms in (["CD45"], ["CD34"], ["CD14", "CD11b"], ["CD79α", "CD19"], ["HLA-DR"])
    ),
    IsctRequirement("plastic adherence", "isct_plastic_adherence_failed", _positive(TestType.plastic_adherence)),
    *(
        IsctRequirement(
            f"{lineage} differentiation", "isct_differentiation_failed", _positive(TestType.differentiation, lineage)
        )
        for lineage in ("osteogenic", "adipogenic", "chondrogenic")
    ),
)


def isct_findings(results: Sequence[QcResultIn]) -> list[Finding]:
    """Findings against a claim of ISCT conformance; fields are relative to the batch holding `results`."""
    findings = []
    for requirement in ISCT_REQUIREMENTS:
        measured = [
            (index, result, criterion)
            for index, result in final_results(results)
            for criterion in requirement.alternatives
            if applies_to(criterion, result)
        ]
        if not measured:
            message = f"claims ISCT conformance without a final {requirement.title} result"
            findings.append(error("isct_evidence_missing", "claims_isct", message))
        for index, result, criterion in measured:
            if comparable(criterion, result) and evaluate(criterion, result) is False:
                subject = result.analyte or result.test_type
                message = f"claims ISCT conformance but {subject} is {reported(result)} (ISCT: {describe(criterion)})"
                field = f"qc_results[{index}].{'value' if result.value is not None else 'qualitative'}"
                findings.append(error(requirement.failed_code, field, message))
    return findings
