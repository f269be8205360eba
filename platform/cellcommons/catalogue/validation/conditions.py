"""Rule 11: data-use conditions are known DUO terms, with the parameter a term takes and none it does not."""

from __future__ import annotations

from collections.abc import Sequence

from cellcommons.catalogue import ontology
from cellcommons.catalogue.schemas import DataUseConditionIn, Finding
from cellcommons.catalogue.validation.findings import error, warning

# DUO parameter (duo_terms.tsv) → the DataUseConditionIn field that carries it. RS's research type has no field
# in the catalogue, so RS is accepted without one.
PARAMETER_FIELDS = {
    "disease": "disease",
    "region": "regions",
    "months": "months",
    "date": "until",
    "project": "project",
    "institutions": "institutions",
    "users": "users",
}


def validate_conditions(conditions: Sequence[DataUseConditionIn], path: str) -> list[Finding]:
    findings = []
    primaries = set()
    for index, condition in enumerate(conditions):
        term = ontology.duo_term(condition.term)
        if term is None:
            message = f"{condition.term} is not a DUO term (known: {len(ontology.duo_terms())} terms of DUO)"
            findings.append(error("duo_unknown_term", f"{path}[{index}].term", message))
            continue
        if term.is_primary:
            primaries.add(term.shorthand)
        findings += _parameter_findings(condition, term, f"{path}[{index}]")
    if not primaries:
        message = "the conditions need a primary DUO term (NRES, GRU, HMB, DS or POA)"
        findings.append(error("duo_no_primary", path, message))
    elif len(primaries) > 1:
        # Several DS conditions (one per disease) are fine; two different primaries contradict each other.
        message = (
            f"the conditions combine the primary DUO terms {', '.join(sorted(primaries))}; keep the one that holds"
        )
        findings.append(warning("duo_multiple_primary", path, message))
    return findings


def _parameter_findings(condition: DataUseConditionIn, term: ontology.DuoTerm, path: str) -> list[Finding]:
    wanted = PARAMETER_FIELDS.get(term.parameter or "")
    findings = []
    for field in PARAMETER_FIELDS.values():
        value = getattr(condition, field)
        given = value is not None and value != []
        if field == wanted and not given:
            message = f"{term.shorthand} ({term.curie}) needs its {term.parameter} parameter in `{field}`"
            findings.append(error("duo_parameter_missing", f"{path}.{field}", message))
        elif field != wanted and given:
            message = f"{term.shorthand} ({term.curie}) takes no `{field}` parameter"
            findings.append(error("duo_parameter_unexpected", f"{path}.{field}", message))
    if wanted == "disease" and condition.disease and not ontology.is_known_disease(condition.disease):
        message = (
            f"{term.shorthand} disease {condition.disease} is not in the shipped MONDO subset "
            f"(release {ontology.mondo_release()})"
        )
        findings.append(error("duo_disease_unknown", f"{path}.disease", message))
    return findings
