"""Rule 10: the tissue and cell type are shipped terms, and the display name carries the tissue's prefix."""

from __future__ import annotations

import re
from functools import cache

from cellcommons.catalogue import ontology
from cellcommons.catalogue.schemas import Finding
from cellcommons.catalogue.validation.findings import error, warning


@cache
def _prefix_token() -> re.Pattern[str]:
    # `BM-MSC`, `… of AT-MSC`: a prefix followed by a hyphen, not inside a longer word.
    alternatives = "|".join(sorted(ontology.tissue_prefixes()))
    return re.compile(rf"(?<![A-Za-z0-9])({alternatives})-")


def tissue_findings(tissue: str, cell_type: str, display_name: str, name_field: str) -> list[Finding]:
    findings = []
    if not ontology.is_known_tissue(tissue):
        findings.append(warning("tissue_unknown", "tissue", f"{tissue} is not among the shipped UBERON tissues"))
    if not ontology.is_known_cell_type(cell_type):
        findings.append(
            warning("cell_type_unknown", "cell_type", f"{cell_type} is not among the shipped CL cell types")
        )
    findings += _prefix_findings(tissue, display_name, name_field)
    return findings


def _prefix_findings(tissue: str, display_name: str, name_field: str) -> list[Finding]:
    expected = ontology.tissue_prefix(tissue)
    named = set(_prefix_token().findall(display_name))
    tissue_text = f"{ontology.label(tissue) or tissue} ({tissue})"
    if named - {expected}:
        # The name claims another tissue than the record: a mix-up, not a style issue.
        message = f"{display_name!r} carries {'/'.join(sorted(named))}- but the tissue is {tissue_text}"
        if expected:
            message += f", whose prefix is {expected}-"
        return [error("tissue_prefix", name_field, message)]
    if expected and expected not in named:
        message = f"{display_name!r} should carry the {expected}- prefix of its tissue {tissue_text}"
        return [warning("tissue_prefix", name_field, message)]
    return []
