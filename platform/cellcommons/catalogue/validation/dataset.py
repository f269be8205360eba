"""An MSC dataset version: tissue (rule 10), data-use conditions (rule 11), ISCT claims (rule 1), privacy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cellcommons.catalogue.enums import AccessRights, PersonalDataLevel, Sensitivity
from cellcommons.catalogue.schemas import BatchIn, DatasetIn, Finding
from cellcommons.catalogue.validation.conditions import validate_conditions
from cellcommons.catalogue.validation.findings import error, warning
from cellcommons.catalogue.validation.isct import isct_findings
from cellcommons.catalogue.validation.tissue import tissue_findings


@dataclass(frozen=True)
class DatasetContext:
    batches: Sequence[BatchIn] = ()  # the batches `dataset.batches` names, resolved by the caller


def validate_dataset(dataset: DatasetIn, context: DatasetContext) -> list[Finding]:
    findings = tissue_findings(dataset.tissue, dataset.cell_type, dataset.title, "title")
    findings += validate_conditions(dataset.conditions, "conditions")
    if dataset.claims_isct:
        findings += _isct_claim_findings(dataset, context.batches)
    findings += _privacy_findings(dataset)
    findings += _column_findings(dataset)
    return findings


def _isct_claim_findings(dataset: DatasetIn, batches: Sequence[BatchIn]) -> list[Finding]:
    """A dataset's ISCT claim rests on the QC results of the batches it links."""
    if not batches:
        message = "claims ISCT conformance but links no batch whose QC results show it"
        return [error("isct_evidence_missing", "claims_isct", message)]
    findings = []
    for position, batch in enumerate(batches):
        index = dataset.batches.index(batch.lot_number) if batch.lot_number in dataset.batches else position
        findings += [
            finding.model_copy(
                update={
                    "field": f"batches[{index}]",
                    "message": f"batch {batch.lot_number} ({finding.field}): {finding.message}",
                }
            )
            for finding in isct_findings(batch.qc_results)
        ]
    return findings


def _privacy_findings(dataset: DatasetIn) -> list[Finding]:
    findings = []
    if dataset.access_rights == AccessRights.public and dataset.personal_data_level == PersonalDataLevel.pseudonymised:
        message = "pseudonymised health data are personal data (GDPR Art. 9) and cannot be public"
        findings.append(error("public_personal_data", "access_rights", message))
    # Direct identifiers are never exported; a file should be pseudonymised at its source.
    flag = error if dataset.personal_data_level == PersonalDataLevel.anonymous else warning
    for d, distribution in enumerate(dataset.distributions):
        for c, column in enumerate(distribution.columns):
            if column.sensitivity == Sensitivity.direct_identifier:
                message = (
                    f"{distribution.file_name} column {column.name!r} is a direct identifier in a dataset declared "
                    f"{dataset.personal_data_level}; pseudonymise it at the source"
                )
                findings.append(
                    flag("direct_identifier_column", f"distributions[{d}].columns[{c}].sensitivity", message)
                )
    return findings


def _column_findings(dataset: DatasetIn) -> list[Finding]:
    """A file's columns are named once each: the export policy goes by name, and a name declared twice with two
    tags (a direct identifier and a plain column) would let the identifier out under the other's tag."""
    findings = []
    for d, distribution in enumerate(dataset.distributions):
        seen: set[str] = set()
        for c, column in enumerate(distribution.columns):
            if column.name in seen:
                message = f"{distribution.file_name} declares column {column.name!r} more than once"
                findings.append(error("column_declared_twice", f"distributions[{d}].columns[{c}].name", message))
            seen.add(column.name)
    return findings
