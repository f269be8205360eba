"""Catalogue tables: institutions, donors, collections, specifications, batches, QC results, datasets.

Constraints live in PostgreSQL where they belong (keys, uniqueness, enums, ranges); the domain rules that need
context (specifications, chronology, ISCT) live in `validation`. Every record names the node it originates
from, so harvested copies can be told from local ones.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID  # PostgreSQL's ARRAY: tag filters use && and @>
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cellcommons.catalogue import enums
from cellcommons.db import Base


def pg_enum(kind: type[StrEnum], name: str) -> SqlEnum:
    return SqlEnum(kind, name=name, values_callable=lambda e: [m.value for m in e], validate_strings=True)


def _id() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)


def _origin() -> Mapped[str]:
    return mapped_column(String(80))


def _institution_fk() -> Mapped[uuid.UUID]:
    return mapped_column(ForeignKey("institution.id", ondelete="RESTRICT"), index=True)


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Institution(Timestamped, Base):
    __tablename__ = "institution"

    id: Mapped[uuid.UUID] = _id()
    slug: Mapped[str] = mapped_column(String(41), unique=True)
    name: Mapped[str] = mapped_column(String(500))
    ror_id: Mapped[str | None] = mapped_column(String(9), unique=True)
    country: Mapped[str] = mapped_column(String(2))
    sector: Mapped[enums.Sector] = mapped_column(pg_enum(enums.Sector, "sector"))
    transfer_basis: Mapped[enums.TransferBasis] = mapped_column(pg_enum(enums.TransferBasis, "transfer_basis"))
    isbt_facility: Mapped[str | None] = mapped_column(String(5))
    eu_te_code: Mapped[str | None] = mapped_column(String(8))
    origin_node: Mapped[str] = _origin()

    __table_args__ = (CheckConstraint("country ~ '^[A-Z]{2}$'", name="country_iso"),)


batch_donor = Table(
    "batch_donor",
    Base.metadata,
    Column("batch_id", ForeignKey("batch.id", ondelete="CASCADE"), primary_key=True),
    Column("donor_id", ForeignKey("donor.id", ondelete="RESTRICT"), primary_key=True, index=True),
)

batch_collection = Table(
    "batch_collection",
    Base.metadata,
    Column("batch_id", ForeignKey("batch.id", ondelete="CASCADE"), primary_key=True),
    Column("collection_id", ForeignKey("collection.id", ondelete="RESTRICT"), primary_key=True, index=True),
)

dataset_version_batch = Table(
    "dataset_version_batch",
    Base.metadata,
    Column("dataset_version_id", ForeignKey("dataset_version.id", ondelete="CASCADE"), primary_key=True),
    Column("batch_id", ForeignKey("batch.id", ondelete="RESTRICT"), primary_key=True, index=True),
)


class Donor(Timestamped, Base):
    __tablename__ = "donor"

    id: Mapped[uuid.UUID] = _id()
    institution_id: Mapped[uuid.UUID] = _institution_fk()
    # The platform pseudonym: a keyed hash made at the site, which keeps the key.
    pseudonym: Mapped[str] = mapped_column(String(80))
    relation: Mapped[enums.DonorRelation] = mapped_column(pg_enum(enums.DonorRelation, "donor_relation"))
    sex: Mapped[enums.Sex] = mapped_column(pg_enum(enums.Sex, "sex"))
    age_band_start: Mapped[int | None] = mapped_column(Integer)
    eligibility: Mapped[enums.Eligibility] = mapped_column(pg_enum(enums.Eligibility, "eligibility"))
    findings: Mapped[list] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    origin_node: Mapped[str] = _origin()

    tests: Mapped[list[DonorTest]] = relationship(lazy="raise", cascade="all, delete-orphan")
    consent_conditions: Mapped[list[DataUseCondition]] = relationship(lazy="raise", cascade="all, delete-orphan")

    __table_args__ = (
        UniqueConstraint("institution_id", "pseudonym"),
        # Ages are kept only as 5-year bands (0, 5, …, 100 = "100+").
        CheckConstraint("age_band_start BETWEEN 0 AND 100 AND age_band_start % 5 = 0", name="age_band"),
    )


class DonorTest(Base):
    __tablename__ = "donor_test"

    id: Mapped[uuid.UUID] = _id()
    donor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("donor.id", ondelete="CASCADE"), index=True)
    marker: Mapped[enums.DonorMarker] = mapped_column(pg_enum(enums.DonorMarker, "donor_marker"))
    result: Mapped[enums.DonorTestResult] = mapped_column(pg_enum(enums.DonorTestResult, "donor_test_result"))
    tested_on: Mapped[date] = mapped_column(Date)

    __table_args__ = (UniqueConstraint("donor_id", "marker", "tested_on"),)


class Collection(Timestamped, Base):
    __tablename__ = "collection"

    id: Mapped[uuid.UUID] = _id()
    institution_id: Mapped[uuid.UUID] = _institution_fk()
    donor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("donor.id", ondelete="RESTRICT"), index=True)
    din: Mapped[str | None] = mapped_column(String(14), unique=True)
    sec_donation: Mapped[str | None] = mapped_column(String(21), unique=True)
    sec_product: Mapped[str | None] = mapped_column(String(30))
    tissue: Mapped[str] = mapped_column(String(20))
    collected_on: Mapped[date] = mapped_column(Date)
    volume_ml: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    chain_of_identity_id: Mapped[str | None] = mapped_column(String(500))
    findings: Mapped[list] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    origin_node: Mapped[str] = _origin()

    __table_args__ = (
        CheckConstraint("din IS NOT NULL OR sec_donation IS NOT NULL", name="identified"),
        CheckConstraint("volume_ml >= 0", name="volume_non_negative"),
    )


class Specification(Timestamped, Base):
    __tablename__ = "specification"

    id: Mapped[uuid.UUID] = _id()
    institution_id: Mapped[uuid.UUID] = _institution_fk()
    version: Mapped[str] = mapped_column(String(40))
    product_name: Mapped[str | None] = mapped_column(String(500))
    origin_node: Mapped[str] = _origin()

    criteria: Mapped[list[SpecCriterion]] = relationship(
        lazy="raise", cascade="all, delete-orphan", order_by="SpecCriterion.position"
    )

    __table_args__ = (UniqueConstraint("institution_id", "version"),)


class SpecCriterion(Base):
    __tablename__ = "spec_criterion"

    id: Mapped[uuid.UUID] = _id()
    specification_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("specification.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    test_type: Mapped[enums.TestType] = mapped_column(pg_enum(enums.TestType, "qc_test_type"))
    analyte: Mapped[str | None] = mapped_column(String(500))
    timepoint: Mapped[enums.Timepoint | None] = mapped_column(pg_enum(enums.Timepoint, "qc_timepoint"))
    operator: Mapped[enums.Operator] = mapped_column(pg_enum(enums.Operator, "spec_operator"))
    limit_value: Mapped[Decimal | None] = mapped_column(Numeric(18, 6))
    allowed: Mapped[list[str] | None] = mapped_column(ARRAY(String(20)))
    expected: Mapped[enums.QualitativeResult | None] = mapped_column(
        pg_enum(enums.QualitativeResult, "qualitative_result")
    )
    unit: Mapped[str | None] = mapped_column(String(40))
    mandatory: Mapped[bool] = mapped_column(server_default=text("true"))


class Batch(Timestamped, Base):
    __tablename__ = "batch"

    id: Mapped[uuid.UUID] = _id()
    institution_id: Mapped[uuid.UUID] = _institution_fk()  # the manufacturer
    lot_number: Mapped[str] = mapped_column(String(60))
    product_name: Mapped[str] = mapped_column(String(500))
    cell_type: Mapped[str] = mapped_column(String(20))
    tissue: Mapped[str] = mapped_column(String(20))
    manufactured_on: Mapped[date | None] = mapped_column(Date)
    passage: Mapped[int | None] = mapped_column(Integer)
    population_doublings: Mapped[Decimal | None] = mapped_column(Numeric(6, 2))
    culture_supplement: Mapped[enums.CultureSupplement | None] = mapped_column(
        pg_enum(enums.CultureSupplement, "culture_supplement")
    )
    total_cells: Mapped[int | None] = mapped_column(BigInteger)
    concentration_1e6_per_ml: Mapped[Decimal | None] = mapped_column(Numeric(12, 4))
    volume_ml: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    containers: Mapped[int | None] = mapped_column(Integer)
    cryoprotectant: Mapped[str | None] = mapped_column(String(500))
    dmso_percent: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    storage_temperature_c: Mapped[Decimal | None] = mapped_column(Numeric(6, 1))
    expires_on: Mapped[date | None] = mapped_column(Date)
    release_status: Mapped[enums.ReleaseStatus] = mapped_column(pg_enum(enums.ReleaseStatus, "release_status"))
    released_on: Mapped[date | None] = mapped_column(Date)
    clinical_trial_ids: Mapped[list[str]] = mapped_column(ARRAY(String(20)), server_default=text("'{}'"))
    specification_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("specification.id", ondelete="RESTRICT"), index=True
    )
    route: Mapped[enums.Route | None] = mapped_column(pg_enum(enums.Route, "administration_route"))
    max_infusion_ml_per_kg_h: Mapped[Decimal | None] = mapped_column(Numeric(8, 3))
    claims_isct: Mapped[bool] = mapped_column(server_default=text("false"))
    findings: Mapped[list] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    origin_node: Mapped[str] = _origin()

    qc_results: Mapped[list[QcResult]] = relationship(
        lazy="raise", cascade="all, delete-orphan", order_by="QcResult.position"
    )

    __table_args__ = (
        UniqueConstraint("institution_id", "lot_number"),
        CheckConstraint("passage >= 0", name="passage_non_negative"),
        CheckConstraint("population_doublings >= 0", name="doublings_non_negative"),
        CheckConstraint("total_cells >= 0", name="total_cells_non_negative"),
        CheckConstraint("concentration_1e6_per_ml >= 0", name="concentration_non_negative"),
        CheckConstraint("volume_ml >= 0", name="volume_non_negative"),
        CheckConstraint("containers >= 0", name="containers_non_negative"),
        CheckConstraint("dmso_percent BETWEEN 0 AND 100", name="dmso_percent_range"),
        CheckConstraint("storage_temperature_c >= -273.15", name="temperature_physical"),
        CheckConstraint("max_infusion_ml_per_kg_h > 0", name="infusion_volume_positive"),
        CheckConstraint("released_on IS NULL OR release_status <> 'quarantine'", name="quarantine_not_released"),
    )


class QcResult(Base):
    __tablename__ = "qc_result"

    id: Mapped[uuid.UUID] = _id()
    batch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    test_type: Mapped[enums.TestType] = mapped_column(pg_enum(enums.TestType, "qc_test_type"))
    analyte: Mapped[str | None] = mapped_column(String(500))
    method: Mapped[str | None] = mapped_column(String(500))
    timepoint: Mapped[enums.Timepoint | None] = mapped_column(pg_enum(enums.Timepoint, "qc_timepoint"))
    status: Mapped[enums.ResultStatus] = mapped_column(pg_enum(enums.ResultStatus, "qc_result_status"))
    value: Mapped[Decimal | None] = mapped_column(Numeric(18, 6))
    unit: Mapped[str | None] = mapped_column(String(40))
    qualitative: Mapped[enums.QualitativeResult | None] = mapped_column(
        pg_enum(enums.QualitativeResult, "qualitative_result")
    )
    passed: Mapped[bool | None] = mapped_column()
    tested_on: Mapped[date | None] = mapped_column(Date)
    lab: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (
        Index("ix_qc_result_batch_id_position", "batch_id", "position", unique=True),
        CheckConstraint("value IS NULL OR unit IS NOT NULL", name="value_has_unit"),
        CheckConstraint("status = 'pending' OR value IS NOT NULL OR qualitative IS NOT NULL", name="final_has_result"),
        CheckConstraint("status = 'final' OR passed IS NULL", name="pending_not_judged"),
    )


class Dataset(Timestamped, Base):
    """An MSC dataset: its identity; the content lives in its versions."""

    __tablename__ = "dataset"

    id: Mapped[uuid.UUID] = _id()
    institution_id: Mapped[uuid.UUID] = _institution_fk()  # the custodian
    accession: Mapped[str] = mapped_column(String(40), unique=True)
    doi: Mapped[str | None] = mapped_column(String(200), unique=True)
    origin_node: Mapped[str] = _origin()

    versions: Mapped[list[DatasetVersion]] = relationship(lazy="raise", order_by="DatasetVersion.version")


class DatasetVersion(Base):
    """One version of a dataset; immutable once published (a trigger refuses changes to it and its parts)."""

    __tablename__ = "dataset_version"

    id: Mapped[uuid.UUID] = _id()
    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[enums.VersionStatus] = mapped_column(pg_enum(enums.VersionStatus, "version_status"))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text)
    data_types: Mapped[list[str]] = mapped_column(ARRAY(String(500)))
    cell_type: Mapped[str] = mapped_column(String(20))
    tissue: Mapped[str] = mapped_column(String(20))
    donor_count: Mapped[int | None] = mapped_column(Integer)
    clinical_trial_ids: Mapped[list[str]] = mapped_column(ARRAY(String(40)), server_default=text("'{}'"))
    personal_data_level: Mapped[enums.PersonalDataLevel] = mapped_column(
        pg_enum(enums.PersonalDataLevel, "personal_data_level")
    )
    access_rights: Mapped[enums.AccessRights] = mapped_column(pg_enum(enums.AccessRights, "access_rights"))
    standards: Mapped[list[str]] = mapped_column(ARRAY(String(500)), server_default=text("'{}'"))
    licence: Mapped[str | None] = mapped_column(String(500))
    keywords: Mapped[list[str]] = mapped_column(ARRAY(String(500)), server_default=text("'{}'"))
    claims_isct: Mapped[bool] = mapped_column(server_default=text("false"))
    findings: Mapped[list] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    distributions: Mapped[list[Distribution]] = relationship(lazy="raise", cascade="all, delete-orphan")
    conditions: Mapped[list[DataUseCondition]] = relationship(lazy="raise", cascade="all, delete-orphan")

    __table_args__ = (
        UniqueConstraint("dataset_id", "version"),
        # At most one draft per dataset; published versions accumulate.
        Index("uq_dataset_version_one_draft", "dataset_id", unique=True, postgresql_where=text("status = 'draft'")),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("donor_count >= 0", name="donor_count_non_negative"),
        CheckConstraint("(status = 'published') = (published_at IS NOT NULL)", name="published_at_iff_published"),
    )


class Distribution(Base):
    """A file of a dataset version. `storage_key` is internal and never shown to users."""

    __tablename__ = "distribution"

    id: Mapped[uuid.UUID] = _id()
    dataset_version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("dataset_version.id", ondelete="CASCADE"), index=True
    )
    file_name: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    storage_key: Mapped[str | None] = mapped_column(String(1024))
    columns: Mapped[list] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))

    __table_args__ = (
        UniqueConstraint("dataset_version_id", "file_name"),
        CheckConstraint("size_bytes >= 0", name="size_non_negative"),
        CheckConstraint("sha256 ~ '^[0-9a-f]{64}$'", name="sha256_hex"),
    )


class DataUseCondition(Base):
    """A DUO term (CURIE) with its parameter, on a dataset version or on a donor's consent."""

    __tablename__ = "data_use_condition"

    id: Mapped[uuid.UUID] = _id()
    dataset_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("dataset_version.id", ondelete="CASCADE"), index=True
    )
    donor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("donor.id", ondelete="CASCADE"), index=True)
    term: Mapped[str] = mapped_column(String(20))
    parameter: Mapped[dict] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))

    __table_args__ = (
        CheckConstraint("(dataset_version_id IS NULL) <> (donor_id IS NULL)", name="one_owner"),
        CheckConstraint("term ~ '^DUO:[0-9]{7}$'", name="duo_curie"),
    )
