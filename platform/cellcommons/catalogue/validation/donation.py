"""Donors (rule 6) and collections (rules 7, 8)."""

from __future__ import annotations

from collections.abc import Callable

from cellcommons.catalogue import ontology
from cellcommons.catalogue.enums import DonorMarker, DonorRelation, DonorTestResult, Eligibility
from cellcommons.catalogue.identifiers import IdentifierProblem, din_issues, sec_donation_issues, sec_product_issues
from cellcommons.catalogue.schemas import CollectionIn, DonorIn, Finding
from cellcommons.catalogue.validation.conditions import validate_conditions
from cellcommons.catalogue.validation.findings import error, warning

# EU Directive 2006/17/EC Annex II (tissues and cells): what an allogeneic donor must have tested negative.
REQUIRED_DONOR_MARKERS = (
    DonorMarker.anti_hiv_1_2,
    DonorMarker.hbsag,
    DonorMarker.anti_hbc,
    DonorMarker.anti_hcv,
    DonorMarker.syphilis,
)
_IDENTIFIERS: tuple[tuple[str, Callable[[str], list[IdentifierProblem]]], ...] = (
    ("din", din_issues),
    ("sec_donation", sec_donation_issues),
    ("sec_product", sec_product_issues),
)


def validate_donor(donor: DonorIn) -> list[Finding]:
    findings = validate_conditions(donor.consent_conditions, "consent_conditions") if donor.consent_conditions else []
    # Autologous donors are exempt: their own cells go back to them.
    if donor.relation != DonorRelation.autologous and donor.eligibility == Eligibility.eligible:
        findings += _eligibility_findings(donor)
    return findings


def _eligibility_findings(donor: DonorIn) -> list[Finding]:
    findings = []
    for index, test in enumerate(donor.tests):
        if test.result == DonorTestResult.positive or (
            test.result == DonorTestResult.pending and test.marker in REQUIRED_DONOR_MARKERS
        ):
            message = f"an eligible allogeneic donor has a {test.result} {test.marker} test"
            # donor_test_positive / donor_test_pending
            findings.append(error(f"donor_test_{test.result}", f"tests[{index}].result", message))
    tested = {test.marker for test in donor.tests}
    missing = [marker.value for marker in REQUIRED_DONOR_MARKERS if marker not in tested]
    if missing:
        message = f"an eligible allogeneic donor has no {', '.join(missing)} test"
        findings.append(error("donor_test_missing", "tests", message))
    return findings


def validate_collection(collection: CollectionIn) -> list[Finding]:
    findings = []
    if collection.din is None and collection.sec_donation is None:
        message = "a collection needs an ISBT 128 DIN or a SEC donation part"
        findings.append(error("collection_identifier_missing", "din", message))
    for field, issues in _IDENTIFIERS:
        value = getattr(collection, field)
        if value is not None:
            findings += [error(problem.code, field, problem.message) for problem in issues(value)]
    if not ontology.is_known_tissue(collection.tissue):
        message = f"{collection.tissue} is not among the shipped UBERON tissues"
        findings.append(warning("tissue_unknown", "tissue", message))
    return findings
