"""An institution: what the schema's patterns cannot see."""

from __future__ import annotations

from cellcommons.catalogue.enums import TransferBasis
from cellcommons.catalogue.schemas import Finding, InstitutionIn
from cellcommons.catalogue.validation.findings import error

# EU member states plus Iceland, Liechtenstein and Norway (ISO 3166-1 alpha-2).
EEA_COUNTRIES = frozenset(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IS IT LI LT LU LV MT NL NO PL PT RO SE SI SK".split()
)


def validate_institution(inst: InstitutionIn) -> list[Finding]:
    findings = []
    # The EU tissue-establishment code starts with the establishment's own country.
    if inst.eu_te_code is not None and inst.eu_te_code[:2] != inst.country:
        message = f"EU tissue-establishment code {inst.eu_te_code} is not from the institution's country {inst.country}"
        findings.append(error("eu_te_country", "eu_te_code", message))
    inside = inst.country in EEA_COUNTRIES
    if (inst.transfer_basis == TransferBasis.eea) != inside:
        where = "inside" if inside else "outside"
        expected = "eea" if inside else "adequacy, scc or none"
        message = f"{inst.country} is {where} the EEA, so its transfer basis is {expected}, not {inst.transfer_basis}"
        findings.append(error("transfer_basis", "transfer_basis", message))
    return findings
