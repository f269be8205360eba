"""The DUO matcher, table-driven: every primary term, every requester-side modifier, and the obligations.

Terms come from the shipped DUO file by shorthand, diseases from the shipped MONDO subset (lung cancer sits below
cancer; type 1 diabetes below diabetes mellitus and below autoimmune disease)."""

from __future__ import annotations

import dataclasses

import pytest

from cellcommons.access.matcher import HARD, REVIEW, Compatibility, Condition, Purpose, Requester, combine, match
from cellcommons.catalogue import ontology
from cellcommons.catalogue.enums import Sector

C, R, I = Compatibility.compatible, Compatibility.needs_review, Compatibility.incompatible  # noqa: E741

CANCER, LUNG_CANCER = "MONDO:0004992", "MONDO:0008903"
DIABETES, T1D, AUTOIMMUNE, CROHN = "MONDO:0005015", "MONDO:0005147", "MONDO:0007179", "MONDO:0005011"

LEIDEN = Requester("alice", "leiden-scgt", "NL", Sector.non_profit, ror_id="05xvt9f17", orcid="0000-0002-1825-0097")
LEIDEN_VERIFIED = dataclasses.replace(LEIDEN, orcid_verified=True)  # the identity token carried the ORCID
LOWLANDS = Requester("bob", "lowlands-regmed", "BE", Sector.public)
MAPLE = Requester("carol", "maple-ccrm", "CA", Sector.non_profit)
STROMA = Requester("dave", "stroma-bio", "NL", Sector.commercial)


def term(shorthand: str, **parameter) -> Condition:
    return Condition(ontology.duo_by_shorthand(shorthand).curie, parameter)


def purpose(primary: str, disease: str | None = None, *extras: str, **flags) -> Purpose:
    return Purpose(primary, disease, frozenset(extras), **flags)


GRU, HMB, POA = purpose("GRU"), purpose("HMB"), purpose("POA")

PRIMARY_CASES = [
    # dataset's primary, purpose, verdict
    ("NRES any research", [term("NRES")], GRU, C),
    ("NRES ancestry", [term("NRES")], POA, C),
    ("NRES disease", [term("NRES")], purpose("DS", CROHN), C),
    ("GRU general", [term("GRU")], GRU, C),
    ("GRU health", [term("GRU")], HMB, C),
    ("GRU disease", [term("GRU")], purpose("DS", T1D), C),
    ("GRU ancestry", [term("GRU")], POA, C),
    ("HMB health", [term("HMB")], HMB, C),
    ("HMB disease", [term("HMB")], purpose("DS", T1D), C),
    ("HMB general research", [term("HMB")], GRU, I),
    ("HMB ancestry", [term("HMB")], POA, I),
    ("DS same disease", [term("DS", disease=CANCER)], purpose("DS", CANCER), C),
    ("DS descendant disease", [term("DS", disease=CANCER)], purpose("DS", LUNG_CANCER), C),
    ("DS ancestor disease", [term("DS", disease=LUNG_CANCER)], purpose("DS", CANCER), I),
    ("DS unrelated disease", [term("DS", disease=CANCER)], purpose("DS", CROHN), I),
    ("DS through a second parent", [term("DS", disease=AUTOIMMUNE)], purpose("DS", T1D), C),
    ("DS either disease", [term("DS", disease=CROHN), term("DS", disease=DIABETES)], purpose("DS", T1D), C),
    ("DS health purpose", [term("DS", disease=CANCER)], HMB, I),
    ("DS general purpose", [term("DS", disease=CANCER)], GRU, I),
    ("POA ancestry", [term("POA")], POA, C),
    ("POA health", [term("POA")], HMB, I),
    ("POA general", [term("POA")], GRU, I),
]


@pytest.mark.parametrize(("name", "conditions", "asked", "expected"), PRIMARY_CASES, ids=[c[0] for c in PRIMARY_CASES])
def test_primary_terms(name, conditions, asked, expected):
    verdict = match(conditions, asked, LOWLANDS)
    assert verdict.compatibility is expected
    assert bool(verdict.reasons) is (expected is I)


MODIFIER_CASES = [
    # modifier on a GRU dataset, purpose, requester, verdict
    ("NPOA blocks ancestry", term("NPOA"), POA, LOWLANDS, I),
    ("NPOA allows health", term("NPOA"), HMB, LOWLANDS, C),
    ("NMDS blocks methods development", term("NMDS"), purpose("HMB", methods_development=True), LOWLANDS, I),
    ("NMDS allows other research", term("NMDS"), HMB, LOWLANDS, C),
    ("GSO needs a genetic study", term("GSO"), HMB, LOWLANDS, I),
    ("GSO genetic study", term("GSO"), purpose("HMB", None, "GSO"), LOWLANDS, C),
    ("NPU public sector", term("NPU"), HMB, LOWLANDS, C),
    ("NPU non-profit", term("NPU"), HMB, LEIDEN, C),
    ("NPU commercial company", term("NPU"), HMB, STROMA, I),
    ("NPU ignores the declared use", term("NPU"), purpose("HMB", commercial_use=True), LEIDEN, C),
    ("NCU non-commercial use", term("NCU"), HMB, STROMA, C),
    ("NCU commercial use declared", term("NCU"), purpose("HMB", commercial_use=True), LEIDEN, I),
    ("NPUNCU non-profit, non-commercial", term("NPUNCU"), HMB, LEIDEN, C),
    ("NPUNCU commercial company", term("NPUNCU"), HMB, STROMA, I),
    ("NPUNCU commercial use declared", term("NPUNCU"), purpose("HMB", commercial_use=True), LEIDEN, I),
    ("GS EEA member", term("GS", regions=["EEA"]), HMB, LOWLANDS, C),
    ("GS EEA outsider", term("GS", regions=["EEA"]), HMB, MAPLE, I),
    ("GS named country", term("GS", regions=["CA"]), HMB, MAPLE, C),
    ("GS other country", term("GS", regions=["NL"]), HMB, LOWLANDS, I),
    ("GS several regions", term("GS", regions=["NL", "CA"]), HMB, MAPLE, C),
    ("IS by slug", term("IS", institutions=["lowlands-regmed"]), HMB, LOWLANDS, C),
    ("IS by ROR id", term("IS", institutions=["05xvt9f17"]), HMB, LEIDEN, C),
    ("IS by ROR URL", term("IS", institutions=["https://ror.org/05xvt9f17"]), HMB, LEIDEN, C),
    ("IS by ROR URL, other case", term("IS", institutions=[" HTTPS://ROR.ORG/05XVT9F17/ "]), HMB, LEIDEN, C),
    ("IS by ROR URL of another", term("IS", institutions=["https://ror.org/04dkp9463"]), HMB, LEIDEN, I),
    ("IS other institution", term("IS", institutions=["leiden-scgt"]), HMB, MAPLE, I),
    ("US by subject at its institution", term("US", users=["lowlands-regmed:bob"]), HMB, LOWLANDS, C),
    ("US by a bare subject", term("US", users=["bob"]), HMB, LOWLANDS, I),
    ("US same subject, other institution", term("US", users=["leiden-scgt:bob"]), HMB, LOWLANDS, I),
    ("US by a verified ORCID", term("US", users=["0000-0002-1825-0097"]), HMB, LEIDEN_VERIFIED, C),
    ("US by a typed ORCID", term("US", users=["0000-0002-1825-0097"]), HMB, LEIDEN, R),
    ("US other user", term("US", users=["lowlands-regmed:alice"]), HMB, LOWLANDS, I),
    ("CC permits clinical care", term("CC"), purpose("HMB", None, "CC"), LOWLANDS, C),
    ("CC absent: no clinical care", term("PUB"), purpose("HMB", None, "CC"), LOWLANDS, I),
]


@pytest.mark.parametrize(
    ("name", "modifier", "asked", "requester", "expected"), MODIFIER_CASES, ids=[c[0] for c in MODIFIER_CASES]
)
def test_requester_side_and_hard_modifiers(name, modifier, asked, requester, expected):
    conditions = [term("GRU"), modifier]
    verdict = match(conditions, asked, requester)
    if expected is I:
        assert verdict.compatibility is I
        assert any(note.term == modifier.term or note.shorthand == "CC" for note in verdict.reasons)
    else:
        assert verdict.compatibility is expected and not verdict.reasons


def test_a_typed_orcid_of_a_named_user_leaves_the_person_to_a_steward():
    verdict = match([term("GRU"), term("US", users=["0000-0002-1825-0097"])], HMB, LEIDEN)
    [obligation] = verdict.obligations
    assert obligation.shorthand == "US" and "confirm that leiden-scgt:alice holds it" in obligation.message
    other = match([term("GRU"), term("US", users=["leiden-scgt:lea"])], HMB, STROMA)
    assert other.reasons[0].message == "use is limited to named users; stroma-bio:dave is not one"


REVIEW_CASES = [
    ("RS", {}, "research-specific"),
    ("PUB", {}, "published"),
    ("COL", {}, "collaboration"),
    ("IRB", {}, "ethics approval"),
    ("MOR", {"until": "2027-01-01"}, "2027-01-01"),
    ("TS", {"months": 24}, "24 months"),
    ("PS", {"project": "MSC-GVHD"}, "MSC-GVHD"),
    ("RTN", {}, "returned"),
]


@pytest.mark.parametrize(("shorthand", "parameter", "said"), REVIEW_CASES, ids=[c[0] for c in REVIEW_CASES])
def test_conditions_only_a_person_can_judge_make_it_need_review(shorthand, parameter, said):
    verdict = match([term("HMB"), term(shorthand, **parameter)], HMB, LOWLANDS)
    assert verdict.compatibility is R
    [obligation] = verdict.obligations
    assert obligation.shorthand == shorthand and said in obligation.message


def test_a_hard_mismatch_outweighs_obligations_and_lists_every_reason():
    conditions = [term("DS", disease=CANCER), term("IRB"), term("NPU"), term("GS", regions=["EEA"])]
    verdict = match(conditions, purpose("DS", CROHN), MAPLE)
    assert verdict.compatibility is I
    assert {n.shorthand for n in verdict.reasons} == {"DS", "GS"}
    assert [n.shorthand for n in verdict.obligations] == ["IRB"]
    assert verdict.as_json()["reasons"][1]["message"] == "use is limited to EEA; maple-ccrm is in CA"


def test_no_primary_condition_is_never_compatible():
    assert match([term("IRB")], HMB, LOWLANDS).compatibility is I


def test_every_duo_term_is_handled():
    handled = {"NRES", "GRU", "HMB", "DS", "POA", "CC"} | set(HARD) | set(REVIEW)
    assert {t.shorthand for t in ontology.duo_terms().values()} == handled


def test_verdicts_of_several_datasets_combine_to_the_worst():
    ok = match([term("NRES")], HMB, LOWLANDS)
    review = match([term("HMB"), term("IRB")], HMB, LOWLANDS)
    bad = match([term("POA")], HMB, LOWLANDS)
    assert combine([ok, review]).compatibility is R
    assert combine([ok, review, bad]).compatibility is I
    assert combine([]).compatibility is C
