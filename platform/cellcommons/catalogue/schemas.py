"""What the catalogue accepts from outside (API, connectors, files, the seed generator).

Pydantic checks shapes and types; the domain rules (DOMAIN.md 1–11) live in `validation/` and run on these
objects. Field names here are the field paths that findings name. Every value accepted here fits its column:
text without NUL characters (PostgreSQL cannot store them; pydantic already refuses lone surrogates), integers
within the column's integer type, decimals within the column's precision; a value that did not would fail the
whole statement writing it (for a sync, the whole page) instead of becoming a finding for its record.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from cellcommons.catalogue.enums import (
    AccessRights,
    CultureSupplement,
    DonorMarker,
    DonorRelation,
    DonorTestResult,
    Eligibility,
    Operator,
    PersonalDataLevel,
    QualitativeResult,
    ReleaseStatus,
    ResultStatus,
    Route,
    Sector,
    Sensitivity,
    Severity,
    Sex,
    TestType,
    Timepoint,
    TransferBasis,
)

INTEGER, BIGINT = 2**31 - 1, 2**63 - 1  # the largest values of PostgreSQL's integer and bigint
FINEST_PLACES = 100  # PostgreSQL cannot even read a number with a few thousand decimal places


def _without_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


def _not_too_fine(value: Decimal) -> Decimal:
    if value and value.as_tuple().exponent < -FINEST_PLACES:  # finite: pydantic refuses NaN and infinities
        raise ValueError(f"must not have more than {FINEST_PLACES} decimal places")
    return value


def numeric(precision: int, scale: int, **bounds: Decimal | int) -> object:
    """A decimal that fits a `numeric(precision, scale)` column (PostgreSQL rounds it to `scale` places);
    `bounds` (ge, le, gt…) narrow it further."""
    largest = Decimal(10) ** (precision - scale) - Decimal(10) ** -scale
    limits: dict[str, Decimal | int] = {"ge": -largest, "le": largest} | bounds
    return Annotated[Decimal, Field(**limits), AfterValidator(_not_too_fine)]


NoNul = AfterValidator(_without_nul)


def text(max_length: int, min_length: int | None = None) -> object:
    """Text stripped of surrounding whitespace, of at most `max_length` characters, without NUL characters."""
    return Annotated[str, StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length), NoNul]


Str = Annotated[str, NoNul]
Text = text(500, min_length=1)
LongText = text(20_000, min_length=1)
Unit = text(40)
Curie = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z][A-Za-z0-9_]*:[A-Za-z0-9_]+$")]
UberonCurie = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^UBERON:\d{7}$")]
ClCurie = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^CL:\d{7}$")]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Finding(BaseModel):
    """One problem found in an input; `field` is a path into the input (`qc_results[2].unit`)."""

    model_config = ConfigDict(frozen=True)

    code: str
    severity: Severity
    field: str
    message: str


class InstitutionIn(Input):
    slug: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,40}$")]
    name: Text
    ror_id: Annotated[str, StringConstraints(pattern=r"^0[a-hj-km-np-tv-z0-9]{6}[0-9]{2}$")] | None = None
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
    sector: Sector
    transfer_basis: TransferBasis
    isbt_facility: Annotated[str, StringConstraints(pattern=r"^[A-NP-Z1-9][0-9]{4}$")] | None = None
    eu_te_code: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}[A-Z0-9]{6}$")] | None = None


class DataUseConditionIn(Input):
    """A DUO term (CURIE) and, for the terms that take one, its parameter."""

    term: Curie
    disease: Curie | None = None  # DS: a MONDO class
    regions: list[Annotated[str, StringConstraints(pattern=r"^([A-Z]{2}|EEA)$")]] | None = None  # GS
    months: Annotated[int, Field(gt=0, le=1200)] | None = None  # TS
    until: date | None = None  # MOR
    project: Text | None = None  # PS
    institutions: list[Text] | None = None  # IS (institution slugs or ROR ids)
    users: list[Text] | None = None  # US


class DonorTestIn(Input):
    marker: DonorMarker
    result: DonorTestResult
    tested_on: date


class DonorIn(Input):
    pseudonym: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9_-]{6,80}$")]
    relation: DonorRelation
    sex: Sex = Sex.unknown
    age_band_start: Annotated[int, Field(ge=0, le=100, multiple_of=5)] | None = None
    eligibility: Eligibility = Eligibility.pending
    consent_conditions: list[DataUseConditionIn] = []
    tests: list[DonorTestIn] = []


class CollectionIn(Input):
    donor: Str  # the donor's pseudonym within the institution
    din: text(20) | None = None
    sec_donation: text(30) | None = None
    sec_product: text(30) | None = None
    tissue: UberonCurie
    collected_on: date
    volume_ml: numeric(10, 2, ge=0) | None = None
    chain_of_identity_id: Text | None = None


class SpecCriterionIn(Input):
    test_type: TestType
    analyte: Text | None = None
    timepoint: Timepoint | None = None
    operator: Operator
    limit: numeric(18, 6) | None = None  # numeric limits (≥ ≤ < > =)
    allowed: list[QualitativeResult] | None = None  # `in` over qualitative results
    expected: QualitativeResult | None = None  # `=` over a qualitative result
    unit: Unit | None = None
    mandatory: bool = True


class SpecificationIn(Input):
    version: text(40, min_length=1)
    product_name: Text | None = None
    criteria: list[SpecCriterionIn] = Field(min_length=1)


class QcResultIn(Input):
    test_type: TestType
    analyte: Text | None = None
    method: Text | None = None
    timepoint: Timepoint | None = None
    status: ResultStatus = ResultStatus.final
    value: numeric(18, 6) | None = None
    unit: Unit | None = None
    qualitative: QualitativeResult | None = None
    passed: bool | None = None
    tested_on: date | None = None
    lab: Text | None = None


class BatchIn(Input):
    lot_number: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,59}$")]
    product_name: Text
    cell_type: ClCurie
    tissue: UberonCurie
    # Lists default through a factory: a literal `[]` default is deep-copied for every record validated.
    donors: list[Str] = Field(default_factory=list)  # donor pseudonyms within the manufacturer institution
    collections: list[Str] = Field(default_factory=list)  # DINs (or SEC donation parts) of the collections used
    manufactured_on: date | None = None
    passage: Annotated[int, Field(ge=0, le=100)] | None = None
    population_doublings: numeric(6, 2, ge=0, le=200) | None = None
    culture_supplement: CultureSupplement | None = None
    total_cells: Annotated[int, Field(ge=0, le=BIGINT)] | None = None
    concentration_1e6_per_ml: numeric(12, 4, ge=0) | None = None
    volume_ml: numeric(10, 2, ge=0) | None = None
    containers: Annotated[int, Field(ge=0, le=INTEGER)] | None = None
    cryoprotectant: Text | None = None
    dmso_percent: numeric(5, 2, ge=0, le=100) | None = None
    storage_temperature_c: numeric(6, 1, ge=-273, le=60) | None = None
    expires_on: date | None = None
    release_status: ReleaseStatus = ReleaseStatus.quarantine
    released_on: date | None = None
    clinical_trial_ids: list[Annotated[str, StringConstraints(pattern=r"^(NCT\d{8}|\d{4}-5\d{5}-\d{2}-\d{2})$")]] = (
        Field(default_factory=list)
    )
    specification_version: Str | None = None
    route: Route | None = None
    max_infusion_ml_per_kg_h: numeric(8, 3, gt=0, le=1000) | None = None
    claims_isct: bool = False
    qc_results: list[QcResultIn] = Field(default_factory=list)


class ColumnIn(Input):
    name: text(120, min_length=1)
    type: text(40, min_length=1)
    sensitivity: Sensitivity
    description: Text | None = None


class DistributionIn(Input):
    file_name: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[^/\\\x00]{1,255}$")]
    media_type: Annotated[str, StringConstraints(pattern=r"^[a-z]+/[a-z0-9.+-]+$")]
    size_bytes: Annotated[int, Field(ge=0, le=BIGINT)] | None = None
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    columns: list[ColumnIn] = []


class DatasetIn(Input):
    """The content of one version of an MSC dataset."""

    title: Text
    description: LongText
    doi: Annotated[str, StringConstraints(pattern=r"^10\.\d{4,9}/\S+$")] | None = None
    data_types: list[Text] = Field(min_length=1)
    cell_type: ClCurie
    tissue: UberonCurie
    donor_count: Annotated[int, Field(ge=0, le=INTEGER)] | None = None
    batches: list[Str] = []  # lot numbers of batches of the custodian institution
    clinical_trial_ids: list[Str] = []
    personal_data_level: PersonalDataLevel
    access_rights: AccessRights
    conditions: list[DataUseConditionIn] = Field(min_length=1)
    standards: list[Text] = []
    licence: Text | None = None
    keywords: list[Text] = []
    claims_isct: bool = False
    distributions: list[DistributionIn] = []
