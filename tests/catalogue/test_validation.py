"""The domain rules (DOMAIN.md 1–11) on the inputs a real file or API call would contain; no database."""

from datetime import date
from decimal import Decimal

import pytest
from pydantic import ValidationError
from tests.catalogue.factories import (
    DIN,
    DS,
    GRU,
    HMB,
    IRB,
    TYPE_1_DIABETES,
    T,
    criterion,
    result,
    result_index,
    valid_batch,
    valid_collection,
    valid_dataset,
    valid_donor,
    valid_spec,
    with_result,
    without_results,
)

from cellcommons.catalogue.enums import Severity
from cellcommons.catalogue.schemas import BatchIn, DataUseConditionIn, DonorTestIn, InstitutionIn
from cellcommons.catalogue.validation import (
    BatchContext,
    DatasetContext,
    findings_from_validation_error,
    validate_batch,
    validate_collection,
    validate_conditions,
    validate_dataset,
    validate_donor,
    validate_institution,
    validate_specification,
)


def check(batch, spec=..., collections=None):
    """Validate `batch` with the factory's specification and collection unless told otherwise."""
    spec = valid_spec() if spec is ... else spec
    collections = [valid_collection()] if collections is None else collections
    return validate_batch(batch, BatchContext(spec, collections))


def codes(findings):
    return sorted(f.code for f in findings)


def only(findings, code):
    """The one finding with `code`; fails listing all findings otherwise."""
    matching = [f for f in findings if f.code == code]
    assert len(matching) == 1, findings
    return matching[0]


def quarantined(**overrides):
    """The factory lot before release: release checks stay out of the way of the rule under test."""
    return valid_batch(release_status="quarantine", released_on=None, **overrides)


# --- the factories are valid --------------------------------------------------------------------------------------


def test_factories_are_valid():
    assert check(valid_batch()) == []
    assert check(valid_batch(claims_isct=True)) == []
    assert validate_specification(valid_spec()) == []
    assert validate_donor(valid_donor()) == []
    assert validate_collection(valid_collection()) == []
    assert validate_dataset(valid_dataset(claims_isct=True), DatasetContext([valid_batch()])) == []


# --- rule 1: ISCT minimal criteria ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("analyte", "value", "code"),
    [
        ("CD73", "95.0", None),
        ("CD73", "94.99", "isct_marker_below"),
        ("CD90", "95", None),
        ("CD90", "94.99", "isct_marker_below"),
        ("CD105", "94.99", "isct_marker_below"),
        ("CD45", "2.0", None),
        ("CD45", "2.01", "isct_marker_above"),
        ("CD34", "2.01", "isct_marker_above"),
        ("CD14", "2.01", "isct_marker_above"),
        ("CD19", "2.01", "isct_marker_above"),
        ("HLA-DR", "2.0", None),
        ("HLA-DR", "2.01", "isct_marker_above"),
    ],
)
def test_isct_marker_boundaries(analyte, value, code):
    batch = with_result(quarantined(claims_isct=True), T.identity_marker, analyte, value=value, passed=None)
    findings = check(batch)
    assert codes(findings) == ([code] if code else [])
    if code:
        finding = only(findings, code)
        assert finding.severity is Severity.error
        assert finding.field == f"qc_results[{result_index(batch, T.identity_marker, analyte)}].value"
        assert analyte in finding.message and value in finding.message


def test_isct_is_judged_only_when_claimed():
    batch = with_result(valid_batch(), T.identity_marker, "CD73", value="85.0")  # meets its own ≥ 80 % spec
    assert check(batch) == []
    assert codes(check(batch.model_copy(update={"claims_isct": True}))) == ["isct_marker_below"]


@pytest.mark.parametrize(
    ("old", "new", "value", "expected"),
    [
        ("CD19", "CD79α", "0.3", []),
        ("CD19", "CD79a", "0.3", []),
        ("CD19", "cd79A", "2.5", ["isct_marker_above"]),
        ("CD14", "CD11b", "1.0", []),
        ("CD14", "CD11b", "2.01", ["isct_marker_above"]),
        ("HLA-DR", "hla-dr", "1.0", []),
        ("HLA-DR", "HLA DR", "1.0", []),
    ],
)
def test_isct_accepts_alternative_markers_and_spellings(old, new, value, expected):
    batch = with_result(quarantined(claims_isct=True), T.identity_marker, old, analyte=new, value=value, passed=None)
    assert codes(check(batch)) == expected


@pytest.mark.parametrize(
    ("test_type", "analyte"),
    [
        (T.identity_marker, "CD34"),
        (T.identity_marker, "CD105"),
        (T.identity_marker, "CD19"),
        (T.plastic_adherence, None),
        (T.differentiation, "chondrogenic"),
        (T.differentiation, None),
    ],
)
def test_isct_claim_without_evidence(test_type, analyte):
    batch = without_results(quarantined(claims_isct=True), test_type, analyte)
    findings = [f for f in check(batch, spec=None) if f.code.startswith("isct")]
    assert {f.code for f in findings} == {"isct_evidence_missing"}
    assert all(f.field == "claims_isct" and f.severity is Severity.error for f in findings)


def test_isct_pending_result_is_not_evidence():
    batch = with_result(quarantined(claims_isct=True), T.identity_marker, "CD73", status="pending", passed=None)
    assert "isct_evidence_missing" in codes(check(batch))


@pytest.mark.parametrize(
    ("test_type", "analyte", "code"),
    [
        (T.plastic_adherence, None, "isct_plastic_adherence_failed"),
        (T.differentiation, "adipogenic", "isct_differentiation_failed"),
    ],
)
def test_isct_qualitative_requirements_fail(test_type, analyte, code):
    batch = with_result(quarantined(claims_isct=True), test_type, analyte, qualitative="negative")
    finding = only(check(batch), code)
    assert finding.field == f"qc_results[{result_index(batch, test_type, analyte)}].qualitative"


def test_dataset_isct_claim_rests_on_its_batches():
    dataset = valid_dataset(claims_isct=True)
    assert codes(validate_dataset(dataset, DatasetContext())) == ["isct_evidence_missing"]
    weak = with_result(valid_batch(), T.identity_marker, "CD90", value="90")
    finding = only(validate_dataset(dataset, DatasetContext([weak])), "isct_marker_below")
    assert finding.field == "batches[0]"
    assert "LDN-BM-24-017" in finding.message and "qc_results[" in finding.message
    assert validate_dataset(valid_dataset(), DatasetContext([weak])) == []


# --- rule 2: specification consistency -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "passed", "inconsistent"),
    [
        ("70.0", True, False),
        ("70", False, True),
        ("69.99", True, True),
        ("69.99", False, False),
        ("69.99", None, False),  # no stored verdict to contradict
    ],
)
def test_stored_verdict_is_re_evaluated(value, passed, inconsistent):
    batch = with_result(quarantined(), T.viability, value=value, passed=passed)
    findings = check(batch)
    assert codes(findings) == (["pass_fail_inconsistent"] if inconsistent else [])
    if inconsistent:
        assert only(findings, "pass_fail_inconsistent").field == "qc_results[0].passed"


def test_analyte_matches_case_insensitively():
    batch = with_result(quarantined(), T.identity_marker, "CD73", analyte="cd73", value="79.9", passed=True)
    assert codes(check(batch)) == ["pass_fail_inconsistent"]


def test_criterion_with_a_timepoint_ignores_other_timepoints():
    batch = with_result(quarantined(), T.viability, value="60", timepoint="in_process", passed=True)
    assert check(batch) == []


@pytest.mark.parametrize(
    ("test_type", "analyte"),
    [(T.endotoxin, None), (T.identity_marker, "CD90"), (T.viability, None), (T.sterility, None), (T.mycoplasma, None)],
)
def test_released_batch_needs_every_mandatory_test(test_type, analyte):
    finding = only(check(without_results(valid_batch(), test_type, analyte)), "release_mandatory_test_missing")
    assert finding.field == "qc_results" and test_type in finding.message


def test_released_batch_fails_a_mandatory_test():
    batch = with_result(valid_batch(), T.endotoxin, value="1.2", passed=False)
    finding = only(check(batch), "release_mandatory_test_failed")
    assert finding.field == f"qc_results[{result_index(batch, T.endotoxin)}]" and "1.2" in finding.message


def test_optional_criterion_does_not_block_release():
    batch = with_result(valid_batch(), T.identity_marker, "HLA-DR", value="3.5", passed=False)
    assert check(batch) == []


def test_quarantined_batch_may_lack_tests():
    assert check(without_results(quarantined(), T.sterility)) == []


@pytest.mark.parametrize(
    ("batch", "spec", "code"),
    [
        (valid_batch(), None, "specification_missing"),  # names a version that was not found
        (valid_batch(specification_version=None), None, "specification_missing"),  # released against nothing
        (quarantined(specification_version="BM-MSC-SPEC-2.1"), valid_spec(), "specification_version_mismatch"),
    ],
)
def test_specification_presence(batch, spec, code):
    assert only(check(batch, spec=spec), code).field == "specification_version"


def test_quarantined_batch_without_specification_is_fine():
    assert check(quarantined(specification_version=None), spec=None) == []


def test_result_unit_must_equal_the_criterion_unit():
    spec = valid_spec(criteria=[*valid_spec().criteria, criterion(T.cell_count, operator="≥", limit=1, unit="10*6/kg")])
    finding = only(check(quarantined(), spec=spec), "unit_spec_mismatch")
    assert finding.field == f"qc_results[{result_index(quarantined(), T.cell_count)}].unit"
    assert "10*6/kg" in finding.message


def test_result_that_cannot_be_judged_against_its_criterion():
    spec = valid_spec(criteria=[*valid_spec().criteria, criterion(T.potency, operator="≥", limit=50, unit="%")])
    batch = quarantined(qc_results=[*valid_batch().qc_results, result(T.potency, qualitative="positive")])
    assert codes(check(batch, spec=spec)) == ["result_not_comparable"]


# --- rule 3 and units: the shape of each result ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "code"),
    [("0", None), ("100", None), ("100.00", None), ("100.01", "viability_range"), ("-0.1", "viability_range")],
)
def test_viability_range(value, code):
    batch = with_result(quarantined(), T.viability, value=value, timepoint="pre_cryo", passed=None)
    assert codes(check(batch)) == ([code] if code else [])


def test_viability_needs_its_timepoint():
    batch = with_result(quarantined(), T.viability, timepoint=None)
    assert only(check(batch), "timepoint_missing").field == "qc_results[0].timepoint"


@pytest.mark.parametrize(
    ("test_type", "analyte", "unit", "code", "explains"),
    [
        (T.viability, None, None, "unit_missing", "no unit"),
        (T.identity_marker, "CD73", None, "unit_missing", "no unit"),
        (T.viability, None, "10*6/mL", "unit_wrong", "allowed: %"),
        (T.viability, None, "percent", "unit_wrong", "allowed: %"),
        (T.endotoxin, None, "EU/mL", "unit_wrong", "{EU}/mL"),
        (T.endotoxin, None, "[EU]/mL", "unit_wrong", "Ehrlich"),
        (T.endotoxin, None, "{eu}/ml", "unit_wrong", "case-sensitive"),
        (T.cell_count, None, "10*6/ml", "unit_wrong", "case-sensitive"),
        (T.cell_count, None, "cells", "unit_wrong", "allowed"),
        (T.cell_count, None, "10*6/kg", None, None),
        (T.cell_count, None, "10*6/mL", None, None),
        (T.cell_count, None, "{cells}", None, None),
    ],
)
def test_units(test_type, analyte, unit, code, explains):
    batch = with_result(quarantined(), test_type, analyte, unit=unit, passed=None)
    findings = check(batch)
    assert codes(findings) == ([code] if code else [])
    if code:
        finding = only(findings, code)
        assert finding.field == f"qc_results[{result_index(batch, test_type, analyte)}].unit"
        assert explains in finding.message


def test_a_wrong_unit_is_not_compared_with_the_limit():
    batch = with_result(quarantined(), T.endotoxin, unit="EU/mL", value="9", passed=True)
    assert codes(check(batch)) == ["unit_wrong"]


@pytest.mark.parametrize(
    ("test_type", "changes", "code", "field"),
    [
        (T.sterility, {"value": "0"}, "result_kind_wrong", "value"),
        (T.sterility, {"unit": "%"}, "unit_wrong", "unit"),
        (T.karyotype, {"qualitative": "no_growth"}, "qualitative_wrong", "qualitative"),
        (T.viability, {"qualitative": "positive"}, "qualitative_wrong", "qualitative"),
        (T.endotoxin, {"value": None, "unit": None, "passed": None}, "result_missing", None),
        (T.endotoxin, {"status": "pending"}, "pending_result_judged", "passed"),
        (T.cell_count, {"value": "-1"}, "value_range", "value"),
        (T.identity_marker, {"value": "101", "passed": None}, "value_range", "value"),
    ],
)
def test_result_shape(test_type, changes, code, field):
    batch = with_result(quarantined(), test_type, **changes)
    finding = only(check(batch), code)
    index = result_index(batch, test_type)
    assert finding.field == f"qc_results[{index}]" + (f".{field}" if field else "")
    assert finding.severity is Severity.error


# --- rule 4: endotoxin dose ceiling -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "endotoxin", "rate", "exceeds"),
    [
        ("intravenous", "1.0", "5", False),  # exactly 5 EU/kg/h
        ("intravenous", "1.0", "5.01", True),
        ("local", "0.5", "10", False),
        ("local", "0.5", "10.02", True),
        ("intrathecal", "0.2", "1", False),  # exactly 0.2 EU/kg/h
        ("intrathecal", "0.5", "0.4", False),
        ("intrathecal", "0.2", "1.01", True),
        ("intrathecal", "0.5", "1", True),  # fine intravenously
    ],
)
def test_endotoxin_ceiling(route, endotoxin, rate, exceeds):
    batch = with_result(
        valid_batch(route=route, max_infusion_ml_per_kg_h=Decimal(rate)), T.endotoxin, value=endotoxin, passed=True
    )
    findings = check(batch)
    assert codes(findings) == (["endotoxin_ceiling"] if exceeds else [])
    if exceeds:
        finding = only(findings, "endotoxin_ceiling")
        assert finding.severity is Severity.error and finding.field.endswith(".value")
        assert route in finding.message and endotoxin in finding.message


@pytest.mark.parametrize(
    ("status", "severity"),
    [
        ("released", Severity.error),
        ("conditionally_released", Severity.error),
        ("quarantine", Severity.warning),
        ("rejected", Severity.warning),
    ],
)
def test_endotoxin_ceiling_severity_follows_release(status, severity):
    batch = valid_batch(release_status=status, max_infusion_ml_per_kg_h=Decimal(20))  # 0.5 × 20 = 10 EU/kg/h
    assert only(check(batch), "endotoxin_ceiling").severity is severity


@pytest.mark.parametrize("missing", [{"route": None}, {"max_infusion_ml_per_kg_h": None}])
def test_endotoxin_ceiling_needs_route_and_rate(missing):
    batch = valid_batch(**{"max_infusion_ml_per_kg_h": Decimal(20), **missing})
    assert "endotoxin_ceiling" not in codes(check(batch))


# --- rule 5: sterility and mycoplasma for release ------------------------------------------------------------------


@pytest.mark.parametrize("test_type", [T.sterility, T.mycoplasma])
def test_released_with_pending_contamination_test(test_type):
    batch = with_result(valid_batch(), test_type, status="pending", qualitative=None, passed=None)
    finding = only(check(batch), "release_sterility_pending")
    assert finding.field == f"qc_results[{result_index(batch, test_type)}].status"


@pytest.mark.parametrize(("test_type", "qualitative"), [(T.sterility, "positive"), (T.mycoplasma, "positive")])
def test_released_with_positive_contamination_test(test_type, qualitative):
    batch = with_result(valid_batch(), test_type, qualitative=qualitative, passed=False)
    assert codes(check(batch)) == ["release_mandatory_test_failed"]


def test_released_with_another_test_pending():
    batch = with_result(valid_batch(), T.identity_marker, "CD105", status="pending", value=None, passed=None)
    assert codes(check(batch)) == ["release_result_pending"]


def test_conditional_release_while_sterility_is_pending():
    batch = with_result(
        valid_batch(release_status="conditionally_released"),
        T.sterility,
        status="pending",
        qualitative=None,
        passed=None,
    )
    assert check(batch) == []


def test_conditional_release_with_nothing_pending():
    finding = only(check(valid_batch(release_status="conditionally_released")), "conditional_release_nothing_pending")
    assert finding.field == "release_status"


def test_conditional_release_still_fails_a_positive_sterility():
    batch = with_result(
        valid_batch(release_status="conditionally_released"), T.sterility, qualitative="positive", passed=False
    )
    assert "release_mandatory_test_failed" in codes(check(batch))


def test_sterility_is_required_for_release_even_when_the_specification_forgets_it():
    spec = valid_spec(criteria=[c for c in valid_spec().criteria if c.test_type not in (T.sterility, T.mycoplasma)])
    batch = without_results(valid_batch(), T.mycoplasma)
    finding = only(check(batch, spec=spec), "release_mandatory_test_missing")
    assert "mycoplasma" in finding.message


def test_quarantined_batch_may_wait_for_sterility():
    assert check(with_result(quarantined(), T.sterility, status="pending", qualitative=None, passed=None)) == []


# --- specification criteria ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "code", "field"),
    [
        (criterion(T.viability, operator="≥", unit="%"), "criterion_malformed", "operator"),
        (criterion(T.sterility, operator="in"), "criterion_malformed", "operator"),
        (criterion(T.sterility, operator="=", limit=0, expected="no_growth"), "criterion_malformed", "operator"),
        (criterion(T.viability, operator="≥", limit=70), "unit_missing", "unit"),
        (criterion(T.viability, operator="≥", limit=70, unit="10*6/mL"), "unit_wrong", "unit"),
        (criterion(T.endotoxin, operator="≤", limit=1, unit="EU/mL"), "unit_wrong", "unit"),
        (criterion(T.viability, operator="≥", limit=101, unit="%"), "limit_range", "limit"),
        (criterion(T.sterility, operator="≤", limit=5, unit="%"), "criterion_malformed", "limit"),
        (criterion(T.karyotype, operator="in", allowed=["normal", "no_growth"]), "qualitative_wrong", "allowed"),
        (criterion(T.viability, operator="=", expected="positive"), "qualitative_wrong", "expected"),
        (
            criterion(T.sterility, operator="in", allowed=["no_growth", "positive"]),
            "criterion_permits_contamination",
            "allowed",
        ),
        (criterion(T.mycoplasma, operator="=", expected="positive"), "criterion_permits_contamination", "expected"),
    ],
)
def test_bad_criteria(bad, code, field):
    spec = valid_spec(criteria=[*valid_spec().criteria, bad])
    finding = only(validate_specification(spec), code)
    assert finding.field == f"criteria[{len(spec.criteria) - 1}].{field}"


def test_a_malformed_criterion_is_the_specifications_finding_not_the_batchs():
    spec = valid_spec(criteria=[*valid_spec().criteria, criterion(T.potency, operator="≥", unit="%")])
    assert check(valid_batch(), spec=spec) == []


# --- rule 6: donor eligibility -------------------------------------------------------------------------------------


def _donor_without(marker):
    donor = valid_donor()
    return valid_donor(tests=[t for t in donor.tests if t.marker != marker])


@pytest.mark.parametrize("marker", ["anti_hiv_1_2", "hbsag", "anti_hbc", "anti_hcv", "syphilis"])
def test_eligible_allogeneic_donor_missing_a_marker(marker):
    finding = only(validate_donor(_donor_without(marker)), "donor_test_missing")
    assert finding.field == "tests" and marker in finding.message


def test_missing_markers_are_named_together():
    donor = valid_donor(tests=[DonorTestIn(marker="hbsag", result="negative", tested_on=date(2024, 1, 26))])
    message = only(validate_donor(donor), "donor_test_missing").message
    assert all(m in message for m in ("anti_hiv_1_2", "anti_hbc", "anti_hcv", "syphilis"))
    assert "hbsag" not in message


def test_htlv_is_not_required():
    assert validate_donor(_donor_without("htlv_i")) == []


@pytest.mark.parametrize(
    ("marker", "result", "code"),
    [
        ("hbsag", "positive", "donor_test_positive"),
        ("htlv_i", "positive", "donor_test_positive"),
        ("anti_hcv", "pending", "donor_test_pending"),
    ],
)
def test_eligible_allogeneic_donor_with_a_bad_result(marker, result, code):
    donor = valid_donor()
    tests = [DonorTestIn(**{**t.model_dump(), "result": result}) if t.marker == marker else t for t in donor.tests]
    index = [t.marker for t in tests].index(marker)
    assert only(validate_donor(valid_donor(tests=tests)), code).field == f"tests[{index}].result"


@pytest.mark.parametrize(
    "overrides",
    [
        {"relation": "autologous", "tests": []},
        {"relation": "allogeneic_related", "eligibility": "pending", "tests": []},
        {
            "eligibility": "ineligible",
            "tests": [DonorTestIn(marker="hbsag", result="positive", tested_on=date(2024, 1, 2))],
        },
    ],
)
def test_exempt_donors(overrides):
    assert validate_donor(valid_donor(**overrides)) == []


def test_donor_consent_conditions_are_checked():
    donor = valid_donor(consent_conditions=[DataUseConditionIn(term=IRB)])
    assert only(validate_donor(donor), "duo_no_primary").field == "consent_conditions"


# --- rules 7 and 8: collection identifiers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "code", "field"),
    [
        ({"din": DIN.lower()}, "din_lowercase", "din"),
        ({"din": DIN[:-1] + ("A" if DIN[-1] != "A" else "B")}, "din_check_character", "din"),
        ({"din": DIN[:-1]}, "din_length", "din"),
        ({"din": None}, "collection_identifier_missing", "din"),
        ({"sec_donation": "NL00012324000000000"}, "sec_donation_length", "sec_donation"),
        ({"sec_product": "E012345600120260231"}, "sec_product_expiry", "sec_product"),
    ],
)
def test_collection_identifiers(overrides, code, field):
    finding = only(validate_collection(valid_collection(**overrides)), code)
    assert finding.field == field and finding.severity is Severity.error


def test_collection_by_sec_alone():
    collection = valid_collection(din=None, sec_donation="NL0001232400000000017", sec_product="E012345600100000000")
    assert validate_collection(collection) == []


def test_collection_tissue_unknown_is_a_warning():
    assert (
        only(validate_collection(valid_collection(tissue="UBERON:0000002")), "tissue_unknown").severity
        is Severity.warning
    )


@pytest.mark.parametrize(
    ("reference", "invalid"),
    [(DIN, False), ("NL0001232400000000017", False), (DIN.lower(), True), (DIN[:-1] + "*", True), ("LOT-17", True)],
)
def test_batch_collection_references(reference, invalid):
    findings = check(quarantined(collections=[reference]), collections=[])
    assert codes(findings) == (["collection_reference_invalid"] if invalid else [])
    if invalid:
        assert only(findings, "collection_reference_invalid").field == "collections[0]"


# --- rule 9: chronology --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("collected", "overrides", "field"),
    [
        (date(2024, 3, 1), {}, None),  # collection == manufacture
        (date(2024, 3, 2), {}, "manufactured_on"),
        (date(2024, 2, 2), {"released_on": date(2024, 3, 1)}, None),  # release == manufacture
        (date(2024, 2, 2), {"released_on": date(2024, 2, 29)}, "released_on"),
        (date(2024, 2, 2), {"expires_on": date(2024, 4, 2)}, "expires_on"),  # release == expiry
        (date(2024, 2, 2), {"expires_on": date(2024, 4, 1)}, "expires_on"),
        (date(2024, 2, 2), {"expires_on": date(2024, 4, 3)}, None),
        (date(2024, 4, 3), {"manufactured_on": None}, "released_on"),  # skips the missing manufacture date
        (date(2024, 2, 2), {"manufactured_on": None, "released_on": None, "release_status": "quarantine"}, None),
    ],
)
def test_chronology(collected, overrides, field):
    findings = check(valid_batch(**overrides), collections=[valid_collection(collected_on=collected)])
    assert codes(findings) == (["chronology"] if field else [])
    if field:
        assert only(findings, "chronology").field == field


def test_manufacture_on_expiry_day_is_out_of_order():
    batch = quarantined(expires_on=date(2024, 3, 1))
    assert only(check(batch), "chronology").field == "expires_on"


def test_latest_collection_is_compared_and_named_by_its_reference():
    other = valid_collection(din=None, sec_donation="NL0001232400000000025", collected_on=date(2024, 3, 5))
    batch = valid_batch(collections=[DIN, "NL0001232400000000025"])
    finding = only(check(batch, collections=[other, valid_collection()]), "chronology")
    assert finding.field == "manufactured_on"
    assert "2024-03-05 (collections[1].collected_on)" in finding.message


def test_released_batch_needs_its_release_date():
    assert only(check(valid_batch(released_on=None)), "release_date_missing").field == "released_on"


# --- rule 10: tissue ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("product_name", "tissue", "severity"),
    [
        ("BM-MSC Leiden, lot 24-017", "UBERON:0002371", None),
        ("Leiden BM-MSC lot 24-017", "UBERON:0002371", None),
        ("AT-MSC Leiden, lot 24-017", "UBERON:0002371", Severity.error),
        ("MSC Leiden, lot 24-017", "UBERON:0002371", Severity.warning),
        ("BMMSC Leiden", "UBERON:0002371", Severity.warning),
        ("WJ-MSC lot 3", "UBERON:0002331", Severity.error),
        ("UC-MSC lot 3", "UBERON:0002331", None),
        ("WJ-MSC lot 3", "UBERON:0003422", None),
        ("placental MSC lot 3", "UBERON:0001987", None),
        ("BM-MSC lot 3", "UBERON:0001987", Severity.error),
    ],
)
def test_product_name_carries_the_tissue_prefix(product_name, tissue, severity):
    findings = check(quarantined(product_name=product_name, tissue=tissue), spec=None, collections=[])
    prefix = [f for f in findings if f.code == "tissue_prefix"]
    assert [f.severity for f in prefix] == ([severity] if severity else [])
    assert all(f.field == "product_name" for f in prefix)


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"tissue": "UBERON:0000002", "product_name": "MSC"}, "tissue_unknown"),
        ({"cell_type": "CL:0000001"}, "cell_type_unknown"),
    ],
)
def test_unknown_terms_are_warnings(overrides, code):
    finding = only(check(quarantined(**overrides), spec=None, collections=[]), code)
    assert finding.severity is Severity.warning


def test_dataset_title_carries_the_prefix():
    finding = only(validate_dataset(valid_dataset(title="MSC transcriptomes"), DatasetContext()), "tissue_prefix")
    assert finding.field == "title" and finding.severity is Severity.warning


# --- rule 11: DUO conditions ----------------------------------------------------------------------------------------


def C(term, **parameter):
    return DataUseConditionIn(term=term, **parameter)


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([C(GRU)], []),
        ([C(HMB), C(IRB)], []),
        ([C(DS, disease=TYPE_1_DIABETES)], []),
        ([C(DS, disease=TYPE_1_DIABETES), C(DS, disease="MONDO:0005301")], []),
        ([C(HMB), C("DUO:0000012")], []),  # RS: its research type has no field here
        ([C(IRB)], [("duo_no_primary", "conditions")]),
        ([C("DUO:0000999")], [("duo_no_primary", "conditions"), ("duo_unknown_term", "conditions[0].term")]),
        ([C(DS)], [("duo_parameter_missing", "conditions[0].disease")]),
        ([C(DS, disease="MONDO:9999999")], [("duo_disease_unknown", "conditions[0].disease")]),
        ([C(DS, disease="DOID:9351")], [("duo_disease_unknown", "conditions[0].disease")]),
        ([C(HMB, disease=TYPE_1_DIABETES)], [("duo_parameter_unexpected", "conditions[0].disease")]),
        ([C(GRU), C("DUO:0000022")], [("duo_parameter_missing", "conditions[1].regions")]),
        ([C(GRU), C("DUO:0000022", regions=[])], [("duo_parameter_missing", "conditions[1].regions")]),
        ([C(GRU), C("DUO:0000022", regions=["EEA", "CA"])], []),
        ([C(GRU), C("DUO:0000025")], [("duo_parameter_missing", "conditions[1].months")]),
        ([C(GRU), C("DUO:0000025", months=24)], []),
        ([C(GRU), C("DUO:0000024", until=date(2027, 1, 1))], []),
        (
            [C(GRU), C("DUO:0000024", months=12)],
            [("duo_parameter_missing", "conditions[1].until"), ("duo_parameter_unexpected", "conditions[1].months")],
        ),
        ([C(GRU), C("DUO:0000027")], [("duo_parameter_missing", "conditions[1].project")]),
        ([C(GRU), C("DUO:0000027", project="MSC-GvHD-2")], []),
        ([C(GRU), C("DUO:0000028")], [("duo_parameter_missing", "conditions[1].institutions")]),
        ([C(GRU), C("DUO:0000028", institutions=["lumc"])], []),
        ([C(GRU), C("DUO:0000026", users=["0000-0002-1825-0097"])], []),
        ([C(GRU), C("DUO:0000026")], [("duo_parameter_missing", "conditions[1].users")]),
    ],
)
def test_duo_conditions(conditions, expected):
    findings = validate_conditions(conditions, "conditions")
    assert sorted((f.code, f.field) for f in findings) == sorted(expected)
    assert all(f.severity is Severity.error for f in findings)


def test_two_different_primaries_are_a_warning():
    finding = only(validate_conditions([C(GRU), C(HMB)], "conditions"), "duo_multiple_primary")
    assert finding.severity is Severity.warning and "GRU" in finding.message


def test_dataset_conditions_are_checked():
    dataset = valid_dataset(conditions=[C(DS, disease="MONDO:9999999")])
    assert codes(validate_dataset(dataset, DatasetContext())) == ["duo_disease_unknown"]


# --- datasets and institutions: privacy and transfer -----------------------------------------------------------------


def test_public_pseudonymised_dataset():
    dataset = valid_dataset(access_rights="public")
    assert only(validate_dataset(dataset, DatasetContext()), "public_personal_data").field == "access_rights"


@pytest.mark.parametrize(("level", "severity"), [("pseudonymised", Severity.warning), ("anonymous", Severity.error)])
def test_direct_identifier_columns(level, severity):
    distribution = valid_dataset().distributions[0].model_dump()
    distribution["columns"][0]["sensitivity"] = "direct_identifier"
    dataset = valid_dataset(personal_data_level=level, distributions=[distribution])
    finding = only(validate_dataset(dataset, DatasetContext()), "direct_identifier_column")
    assert finding.severity is severity and finding.field == "distributions[0].columns[0].sensitivity"


def test_a_column_declared_twice_is_an_error_naming_the_second():
    distribution = valid_dataset().distributions[0].model_dump()
    twin = {**distribution["columns"][0], "sensitivity": "plain"}
    dataset = valid_dataset(distributions=[{**distribution, "columns": [*distribution["columns"], twin]}])
    finding = only(validate_dataset(dataset, DatasetContext()), "column_declared_twice")
    position = len(distribution["columns"])
    assert finding.severity is Severity.error and finding.field == f"distributions[0].columns[{position}].name"
    assert codes(validate_dataset(valid_dataset(), DatasetContext())) == []


def _institution(**overrides):
    defaults = {"slug": "lumc", "name": "LUMC", "country": "NL", "sector": "public", "transfer_basis": "eea"}
    return InstitutionIn(**{**defaults, **overrides})


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({}, None),
        ({"eu_te_code": "NL000123"}, None),
        ({"eu_te_code": "BE000123"}, "eu_te_country"),
        ({"country": "CA", "transfer_basis": "adequacy"}, None),
        ({"country": "CA"}, "transfer_basis"),
        ({"transfer_basis": "scc"}, "transfer_basis"),
        ({"country": "NO"}, None),
    ],
)
def test_institutions(overrides, code):
    assert codes(validate_institution(_institution(**overrides))) == ([code] if code else [])


# --- pydantic errors as findings ----------------------------------------------------------------------------------


def _validation_error(data):
    with pytest.raises(ValidationError) as caught:
        BatchIn.model_validate(data)
    return caught.value


def test_findings_from_validation_error():
    data = valid_batch().model_dump()
    del data["lot_number"]
    data["qc_results"][2]["value"] = "ninety"
    data["qc_results"][3]["unit "] = "%"
    findings = findings_from_validation_error(_validation_error(data), prefix="rows[3]")
    assert sorted((f.code, f.field) for f in findings) == [
        ("invalid_value", "rows[3].qc_results[2].value"),
        ("invalid_value", "rows[3].qc_results[3].unit "),
        ("missing", "rows[3].lot_number"),
    ]
    assert "'ninety'" in next(f.message for f in findings if f.field.endswith("[2].value"))
    assert all(f.severity is Severity.error for f in findings)


def test_findings_from_validation_error_without_prefix():
    data = valid_batch().model_dump() | {"tissue": "bone marrow"}
    (finding,) = findings_from_validation_error(_validation_error(data))
    assert finding.field == "tissue" and "'bone marrow'" in finding.message


def test_long_inputs_are_shortened_in_messages():
    data = valid_batch().model_dump() | {"cell_type": "x" * 500}
    (finding,) = findings_from_validation_error(_validation_error(data))
    assert len(finding.message) < 200
