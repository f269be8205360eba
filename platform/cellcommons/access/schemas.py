"""What the access services accept: a request's content and the terms a steward sets when approving."""

from __future__ import annotations

import uuid
from datetime import date
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from cellcommons.access.matcher import PURPOSE_EXTRA, PURPOSE_PRIMARY, Purpose
from cellcommons.access.models import EndOfTerm, OnwardTransfer, TransferMechanism
from cellcommons.auth.orcid import canonical_orcid
from cellcommons.catalogue import ontology
from cellcommons.catalogue.enums import Sensitivity, Severity
from cellcommons.catalogue.schemas import Curie, Finding, Input, LongText, Text


def _orcid(value: str) -> str:
    orcid = canonical_orcid(value)
    if orcid is None:
        raise ValueError("must be an ORCID iD such as 0000-0002-1825-0097, whose last character checks the rest")
    return orcid


Orcid = Annotated[str, StringConstraints(max_length=60), AfterValidator(_orcid)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5_000)]


class RequestIn(Input):
    datasets: list[uuid.UUID] = Field(min_length=1, max_length=50)
    purpose_terms: list[Curie] = Field(min_length=1, max_length=5)
    disease: Curie | None = None
    methods_development: bool = False
    commercial_use: bool
    lay_summary: LongText
    ethics_reference: Text | None = None
    project: Text | None = None
    period_start: date
    period_end: date
    orcid: Orcid | None = None


class ColumnTreatment(StrEnum):
    drop = "drop"
    generalise = "generalise"
    pseudonymise = "pseudonymise"
    keep = "keep"


DEFAULT_EXPORT_POLICY = {
    Sensitivity.direct_identifier: ColumnTreatment.drop,
    Sensitivity.quasi_identifier: ColumnTreatment.pseudonymise,
    Sensitivity.sensitive: ColumnTreatment.drop,
    Sensitivity.plain: ColumnTreatment.keep,
}


class TermsIn(Input):
    """The agreement's terms; the term defaults to the requested period, the mechanism to the recipient's
    recorded transfer basis."""

    effective_on: date | None = None
    expires_on: date | None = None
    transfer_mechanism: TransferMechanism | None = None
    onward_transfer: OnwardTransfer = OnwardTransfer.prohibited
    publication_terms: Text | None = None
    end_of_term: EndOfTerm = EndOfTerm.destroy
    export_policy: dict[Sensitivity, ColumnTreatment] = Field(default_factory=lambda: dict(DEFAULT_EXPORT_POLICY))
    covers_later_versions: bool = False
    document_reference: Text | None = None


def error(code: str, field: str, message: str) -> Finding:
    return Finding(code=code, severity=Severity.error, field=field, message=message)


def purpose_findings(data: RequestIn) -> list[Finding]:
    """One primary purpose (GRU, HMB, DS, POA), extras only GSO/CC, a shipped MONDO disease exactly for DS."""
    findings = []
    shorthands = []
    for index, curie in enumerate(data.purpose_terms):
        term = ontology.duo_term(curie)
        if term is None or term.shorthand not in PURPOSE_PRIMARY | PURPOSE_EXTRA:
            allowed = ", ".join(sorted(PURPOSE_PRIMARY | PURPOSE_EXTRA))
            findings.append(error("purpose_term", f"purpose_terms[{index}]", f"{curie} is not a purpose ({allowed})"))
        else:
            shorthands.append(term.shorthand)
    primaries = [s for s in shorthands if s in PURPOSE_PRIMARY]
    if len(primaries) != 1 and not findings:
        message = f"state exactly one primary purpose (GRU, HMB, DS or POA); given {len(primaries)}"
        findings.append(error("purpose_primary", "purpose_terms", message))
    if "DS" in primaries and data.disease is None:
        findings.append(error("purpose_disease_missing", "disease", "a DS purpose names its MONDO disease"))
    if data.disease is not None and "DS" not in primaries:
        findings.append(error("purpose_disease_unexpected", "disease", "only a DS purpose names a disease"))
    if data.disease is not None and not ontology.is_known_disease(data.disease):
        message = f"{data.disease} is not in the shipped MONDO subset (release {ontology.mondo_release()})"
        findings.append(error("purpose_disease_unknown", "disease", message))
    if data.period_end <= data.period_start:
        findings.append(error("period_order", "period_end", "the period must end after it starts"))
    if len(set(data.datasets)) != len(data.datasets):
        findings.append(error("datasets_repeated", "datasets", "each dataset once"))
    return findings


def purpose_of(purpose_terms: list[str], disease: str | None, methods_development: bool, commercial: bool) -> Purpose:
    shorthands = {ontology.duo_term(t).shorthand for t in purpose_terms}
    return Purpose(
        primary=next(iter(shorthands & PURPOSE_PRIMARY)),
        disease=disease,
        extras=frozenset(shorthands & PURPOSE_EXTRA),
        methods_development=methods_development,
        commercial_use=commercial,
    )
