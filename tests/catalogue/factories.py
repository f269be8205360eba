"""Valid catalogue inputs for tests: a released BM-MSC lot from Leiden, its specification, donor and collection.

Every factory returns an input that passes validation unchanged; `**overrides` replace top-level fields (and
are validated like real input), so a test changes exactly one thing. `with_result` / `without_results` edit
one QC result of a batch.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from cellcommons.catalogue.enums import QualitativeResult, TestType, Timepoint
from cellcommons.catalogue.identifiers import make_din
from cellcommons.catalogue.schemas import (
    BatchIn,
    CollectionIn,
    DatasetIn,
    DataUseConditionIn,
    DonorIn,
    DonorTestIn,
    QcResultIn,
    SpecCriterionIn,
    SpecificationIn,
)

FACILITY = "G1234"  # the ISBT 128 facility number of the Leiden GMP facility in these tests
DIN = make_din(FACILITY, 24, 17)
DONOR = "D-7f3a9c21e4"
LOT = "LDN-BM-24-017"
SPEC_VERSION = "BM-MSC-SPEC-3.0"

BONE_MARROW = "UBERON:0002371"
ADIPOSE_TISSUE = "UBERON:0001013"
BM_MSC = "CL:0002540"

GRU = "DUO:0000042"
HMB = "DUO:0000006"
DS = "DUO:0000007"
IRB = "DUO:0000021"
NPU = "DUO:0000045"
TYPE_1_DIABETES = "MONDO:0005147"

Q = QualitativeResult
T = TestType


def _build(model: type, defaults: dict[str, Any], overrides: dict[str, Any]) -> Any:
    return model(**{**defaults, **overrides})


def criterion(test_type: TestType, **fields: Any) -> SpecCriterionIn:
    return SpecCriterionIn(test_type=test_type, **fields)


def valid_spec(**overrides: Any) -> SpecificationIn:
    """≥ 70 % viable post-thaw, CD73/CD90/CD105 ≥ 80 %, no growth, mycoplasma negative, endotoxin ≤ 1.0 {EU}/mL."""
    percent = {"unit": "%", "operator": "≥"}
    defaults = {
        "version": SPEC_VERSION,
        "product_name": "BM-MSC (Leiden)",
        "criteria": [
            criterion(T.viability, timepoint=Timepoint.post_thaw, limit=Decimal(70), **percent),
            *(
                criterion(T.identity_marker, analyte=cd, limit=Decimal(80), **percent)
                for cd in ("CD73", "CD90", "CD105")
            ),
            criterion(T.identity_marker, analyte="HLA-DR", operator="≤", limit=Decimal(2), unit="%", mandatory=False),
            criterion(T.sterility, operator="=", expected=Q.no_growth),
            criterion(T.mycoplasma, operator="=", expected=Q.negative),
            criterion(T.endotoxin, operator="≤", limit=Decimal("1.0"), unit="{EU}/mL"),
        ],
    }
    return _build(SpecificationIn, defaults, overrides)


def result(test_type: TestType, value: str | None = None, unit: str | None = None, **fields: Any) -> QcResultIn:
    """A final QC result tested on 2024-03-20 by the facility's QC lab; `value` as text keeps decimals exact."""
    defaults = {"status": "final", "tested_on": date(2024, 3, 20), "lab": "LUMC QC lab"}
    return QcResultIn(
        test_type=test_type, value=None if value is None else Decimal(value), unit=unit, **{**defaults, **fields}
    )


def _marker(analyte: str, value: str, passed: bool | None = True) -> QcResultIn:
    return result(T.identity_marker, value, "%", analyte=analyte, method="flow cytometry", passed=passed)


def valid_qc_results() -> list[QcResultIn]:
    """A full release panel that meets the specification and the ISCT minimal criteria."""
    return [
        result(T.viability, "92.4", "%", timepoint=Timepoint.post_thaw, method="7-AAD flow cytometry", passed=True),
        result(T.viability, "96.1", "%", timepoint=Timepoint.pre_cryo, method="trypan blue"),
        _marker("CD73", "99.1"),
        _marker("CD90", "98.7"),
        _marker("CD105", "97.5"),
        *(_marker(cd, v, None) for cd, v in [("CD45", "0.8"), ("CD34", "0.5"), ("CD14", "0.9"), ("CD19", "0.3")]),
        _marker("HLA-DR", "1.2"),
        result(T.cell_count, "200", "10*6", method="NucleoCounter"),
        result(T.sterility, qualitative=Q.no_growth, method="Ph. Eur. 2.6.27 BacT/ALERT", passed=True),
        result(T.mycoplasma, qualitative=Q.negative, method="Ph. Eur. 2.6.7 NAT", passed=True),
        result(T.endotoxin, "0.5", "{EU}/mL", method="kinetic chromogenic LAL", passed=True),
        result(T.plastic_adherence, qualitative=Q.positive),
        *(
            result(T.differentiation, qualitative=Q.positive, analyte=lineage)
            for lineage in ("osteogenic", "adipogenic", "chondrogenic")
        ),
        result(T.karyotype, qualitative=Q.normal, method="G-banding"),
    ]


def valid_batch(**overrides: Any) -> BatchIn:
    """Lot LDN-BM-24-017: collected 2024-02-02, made 2024-03-01, released 2024-04-02, expires 2026-03-01."""
    defaults = {
        "lot_number": LOT,
        "product_name": "BM-MSC Leiden, lot 24-017",
        "cell_type": BM_MSC,
        "tissue": BONE_MARROW,
        "donors": [DONOR],
        "collections": [DIN],
        "manufactured_on": date(2024, 3, 1),
        "passage": 3,
        "population_doublings": Decimal("12.5"),
        "culture_supplement": "hpl",
        "total_cells": 200_000_000,
        "concentration_1e6_per_ml": Decimal(10),
        "volume_ml": Decimal(20),
        "containers": 2,
        "cryoprotectant": "CryoStor CS10",
        "dmso_percent": Decimal(10),
        "storage_temperature_c": Decimal(-150),
        "expires_on": date(2026, 3, 1),
        "release_status": "released",
        "released_on": date(2024, 4, 2),
        "clinical_trial_ids": ["2023-501234-12-00"],
        "specification_version": SPEC_VERSION,
        "route": "intravenous",
        "max_infusion_ml_per_kg_h": Decimal(1),
        "qc_results": valid_qc_results(),
    }
    return _build(BatchIn, defaults, overrides)


def result_index(batch: BatchIn, test_type: TestType, analyte: str | None = None, timepoint: str | None = None) -> int:
    """The position of the first QC result of that test (analyte, timepoint) in the batch."""
    for index, qc in enumerate(batch.qc_results):
        if qc.test_type == test_type and analyte in (None, qc.analyte) and timepoint in (None, qc.timepoint):
            return index
    raise LookupError(f"no {test_type} {analyte or ''} result")


def with_result(batch: BatchIn, test_type: TestType, analyte: str | None = None, /, **changes: Any) -> BatchIn:
    """The batch with one QC result changed (validated like input); `value` may be given as text.

    The result is picked by test type and analyte; `changes` may set a new `analyte` too.
    """
    index = result_index(batch, test_type, analyte)
    if isinstance(changes.get("value"), str):
        changes["value"] = Decimal(changes["value"])
    results = list(batch.qc_results)
    results[index] = QcResultIn(**{**results[index].model_dump(), **changes})
    return batch.model_copy(update={"qc_results": results})


def without_results(batch: BatchIn, test_type: TestType, analyte: str | None = None) -> BatchIn:
    kept = [qc for qc in batch.qc_results if not (qc.test_type == test_type and analyte in (None, qc.analyte))]
    return batch.model_copy(update={"qc_results": kept})


def valid_collection(**overrides: Any) -> CollectionIn:
    defaults = {
        "donor": DONOR,
        "din": DIN,
        "tissue": BONE_MARROW,
        "collected_on": date(2024, 2, 2),
        "volume_ml": Decimal(50),
        "chain_of_identity_id": "COI-24-017",
    }
    return _build(CollectionIn, defaults, overrides)


ELIGIBILITY_MARKERS = ("anti_hiv_1_2", "hbsag", "anti_hbc", "anti_hcv", "syphilis", "htlv_i")


def valid_donor(**overrides: Any) -> DonorIn:
    """An eligible unrelated allogeneic donor, tested negative for every marker a week before collection."""
    defaults = {
        "pseudonym": DONOR,
        "relation": "allogeneic_unrelated",
        "sex": "female",
        "age_band_start": 25,
        "eligibility": "eligible",
        "consent_conditions": [DataUseConditionIn(term=HMB)],
        "tests": [
            DonorTestIn(marker=marker, result="negative", tested_on=date(2024, 1, 26)) for marker in ELIGIBILITY_MARKERS
        ],
    }
    return _build(DonorIn, defaults, overrides)


def valid_dataset(**overrides: Any) -> DatasetIn:
    """Restricted, pseudonymised flow and scRNA-seq data of lot LDN-BM-24-017, for health research with IRB approval."""
    defaults = {
        "title": "BM-MSC post-thaw immunophenotype and single-cell transcriptomes",
        "description": "Flow cytometry (MIFlowCyt) and scRNA-seq of bone-marrow MSC lot LDN-BM-24-017 after thaw.",
        "data_types": ["flow cytometry", "scRNA-seq"],
        "cell_type": BM_MSC,
        "tissue": BONE_MARROW,
        "donor_count": 1,
        "batches": [LOT],
        "clinical_trial_ids": ["2023-501234-12-00"],
        "personal_data_level": "pseudonymised",
        "access_rights": "restricted",
        "conditions": [DataUseConditionIn(term=HMB), DataUseConditionIn(term=IRB), DataUseConditionIn(term=NPU)],
        "standards": ["MIFlowCyt", "MIACARM"],
        "licence": "LicenseRef-CellCommons-DUA",
        "keywords": ["MSC", "bone marrow", "immunophenotype"],
        "distributions": [
            {
                "file_name": "ldn-bm-24-017-flow.csv",
                "media_type": "text/csv",
                "size_bytes": 48_213,
                "columns": [
                    {"name": "donor", "type": "string", "sensitivity": "quasi_identifier"},
                    {"name": "marker", "type": "string", "sensitivity": "plain"},
                    {"name": "percent_positive", "type": "decimal", "sensitivity": "plain"},
                ],
            }
        ],
    }
    return _build(DatasetIn, defaults, overrides)
