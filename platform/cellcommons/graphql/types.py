"""GraphQL types of the catalogue. Each wraps a row the policy already let through; relations load via the
request's DataLoaders, which apply the policy again for the related rows."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import strawberry
from strawberry.scalars import JSON

from cellcommons.catalogue import enums, models
from cellcommons.errors import CellCommonsError
from cellcommons.graphql.connection import Connection, list_connection, nodes_select, page_request

Sector = strawberry.enum(enums.Sector)
TransferBasis = strawberry.enum(enums.TransferBasis)
ReleaseStatus = strawberry.enum(enums.ReleaseStatus)
CultureSupplement = strawberry.enum(enums.CultureSupplement)
Route = strawberry.enum(enums.Route)
QcTestType = strawberry.enum(enums.TestType, name="QcTestType")
Timepoint = strawberry.enum(enums.Timepoint)
ResultStatus = strawberry.enum(enums.ResultStatus)
QualitativeResult = strawberry.enum(enums.QualitativeResult)
AccessRights = strawberry.enum(enums.AccessRights)
PersonalDataLevel = strawberry.enum(enums.PersonalDataLevel)
VersionStatus = strawberry.enum(enums.VersionStatus)
DonorRelation = strawberry.enum(enums.DonorRelation)
Sex = strawberry.enum(enums.Sex)
Eligibility = strawberry.enum(enums.Eligibility)


@strawberry.interface(description="An object with an opaque global id (Relay object identification).")
class Node:
    @strawberry.field(description="Opaque and stable; reveals nothing about how the record is stored.")
    def id(self, info: strawberry.Info) -> strawberry.ID:
        return strawberry.ID(info.context.ids.global_id(type(self).__name__, self.row.id))


@strawberry.type(description="A partner institution of the consortium.")
class Institution(Node):
    row: strawberry.Private[models.Institution]
    slug: str
    name: str
    ror_id: str | None
    country: str
    sector: Sector
    transfer_basis: TransferBasis

    @classmethod
    def of(cls, row: models.Institution) -> Institution:
        return cls(
            row=row, slug=row.slug, name=row.name, ror_id=row.ror_id, country=row.country,
            sector=row.sector, transfer_basis=row.transfer_basis,
        )  # fmt: skip


async def _institution(info: strawberry.Info, institution_id) -> Institution | None:
    row = await info.context.row(models.Institution, institution_id)
    return Institution.of(row) if row else None


@strawberry.type(description="A release criterion of a specification.")
class SpecCriterion:
    test_type: QcTestType
    analyte: str | None
    timepoint: Timepoint | None
    operator: str
    limit: Decimal | None
    allowed: list[str] | None
    expected: QualitativeResult | None
    unit: str | None
    mandatory: bool


@strawberry.type(description="A product specification: the criteria a lot is released against.")
class Specification(Node):
    row: strawberry.Private[models.Specification]
    version: str
    product_name: str | None

    @classmethod
    def of(cls, row: models.Specification) -> Specification:
        return cls(row=row, version=row.version, product_name=row.product_name)

    @strawberry.field
    async def criteria(self, info: strawberry.Info) -> list[SpecCriterion]:
        rows = await info.context.criteria.load(self.row.id)
        return [
            SpecCriterion(
                test_type=r.test_type, analyte=r.analyte, timepoint=r.timepoint, operator=r.operator.value,
                limit=r.limit_value, allowed=r.allowed, expected=r.expected, unit=r.unit, mandatory=r.mandatory,
            )
            for r in rows
        ]  # fmt: skip


@strawberry.type(description="A quality-control result of a batch; values carry UCUM units.")
class QcResult(Node):
    row: strawberry.Private[models.QcResult]
    test_type: QcTestType
    analyte: str | None
    method: str | None
    timepoint: Timepoint | None
    status: ResultStatus
    value: Decimal | None
    unit: str | None
    qualitative: QualitativeResult | None
    passed: bool | None
    tested_on: date | None

    @classmethod
    def of(cls, row: models.QcResult) -> QcResult:
        return cls(
            row=row, test_type=row.test_type, analyte=row.analyte, method=row.method,
            timepoint=row.timepoint, status=row.status, value=row.value, unit=row.unit, qualitative=row.qualitative,
            passed=row.passed, tested_on=row.tested_on,
        )  # fmt: skip


@strawberry.type(description="A lot of clinical cell-therapy material.")
class Batch(Node):
    row: strawberry.Private[models.Batch]
    lot_number: str
    product_name: str
    cell_type: str = strawberry.field(description="Cell Ontology CURIE")
    tissue: str = strawberry.field(description="UBERON CURIE of the tissue source")
    manufactured_on: date | None
    passage: int | None
    population_doublings: Decimal | None
    culture_supplement: CultureSupplement | None
    total_cells: float | None = strawberry.field(description="[{cells}]")
    concentration_1e6_per_ml: Decimal | None
    volume_ml: Decimal | None
    dmso_percent: Decimal | None
    storage_temperature_c: Decimal | None
    expires_on: date | None
    release_status: ReleaseStatus
    released_on: date | None
    clinical_trial_ids: list[str]
    route: Route | None
    max_infusion_ml_per_kg_h: Decimal | None
    claims_isct: bool
    harvested: bool = strawberry.field(description="A read-only copy harvested from another node")
    qc: strawberry.Private[list[QcResult] | None] = None  # preloaded for a page of batches, see preload_qc_results

    @classmethod
    def of(cls, row: models.Batch, node_id: str) -> Batch:
        return cls(
            row=row, lot_number=row.lot_number, product_name=row.product_name,
            cell_type=row.cell_type, tissue=row.tissue, manufactured_on=row.manufactured_on, passage=row.passage,
            population_doublings=row.population_doublings, culture_supplement=row.culture_supplement,
            total_cells=row.total_cells, concentration_1e6_per_ml=row.concentration_1e6_per_ml,
            volume_ml=row.volume_ml, dmso_percent=row.dmso_percent, storage_temperature_c=row.storage_temperature_c,
            expires_on=row.expires_on, release_status=row.release_status, released_on=row.released_on,
            clinical_trial_ids=list(row.clinical_trial_ids or []), route=row.route,
            max_infusion_ml_per_kg_h=row.max_infusion_ml_per_kg_h, claims_isct=row.claims_isct,
            harvested=row.origin_node != node_id,
        )  # fmt: skip

    @strawberry.field(description="The manufacturer")
    async def institution(self, info: strawberry.Info) -> Institution | None:
        return await _institution(info, self.row.institution_id)

    @strawberry.field
    def qc_results(self, info: strawberry.Info) -> list[QcResult]:
        # Sync when preloaded: a page of 100 batches then costs one await, not 100 (each a coroutine, a future
        # and a task); otherwise the awaitable of this batch's load, which graphql-core awaits.
        return self.qc if self.qc is not None else self._load_qc_results(info)

    async def _load_qc_results(self, info: strawberry.Info) -> list[QcResult]:
        return [QcResult.of(r) for r in await info.context.qc_results.load(self.row.id)]

    @staticmethod
    async def preload_qc_results(info: strawberry.Info, batches: list[Batch]) -> None:
        """The QC results of a page of batches, through the same DataLoader (sibling pages share one statement)."""
        groups = await info.context.qc_results.load_many([batch.row.id for batch in batches])
        for batch, rows in zip(batches, groups, strict=True):
            batch.qc = [QcResult.of(r) for r in rows]

    @strawberry.field
    async def specification(self, info: strawberry.Info) -> Specification | None:
        if self.row.specification_id is None:
            return None
        row = await info.context.row(models.Specification, self.row.specification_id)
        return Specification.of(row) if row else None

    @strawberry.field(description="How many donors the lot pools")
    async def donor_count(self, info: strawberry.Info) -> int:
        return await info.context.donor_counts.load(self.row.id)


@strawberry.type(description="A data-use condition: a DUO term (CURIE) with its parameter.")
class DataUseCondition:
    term: str
    parameter: JSON


@strawberry.type(description="A file of a dataset version; its storage location is never shown.")
class Distribution(Node):
    row: strawberry.Private[models.Distribution]
    file_name: str
    media_type: str
    size_bytes: float | None
    sha256: str | None
    columns: JSON

    @classmethod
    def of(cls, row: models.Distribution) -> Distribution:
        return cls(
            row=row, file_name=row.file_name, media_type=row.media_type,
            size_bytes=row.size_bytes, sha256=row.sha256, columns=row.columns,
        )  # fmt: skip


@strawberry.type(description="One version of an MSC dataset; immutable once published.")
class DatasetVersion(Node):
    row: strawberry.Private[models.DatasetVersion]
    version: int
    status: VersionStatus
    published_at: datetime | None
    title: str
    description: str
    data_types: list[str]
    cell_type: str
    tissue: str
    donor_count: int | None
    personal_data_level: PersonalDataLevel
    access_rights: AccessRights
    standards: list[str]
    licence: str | None
    keywords: list[str]
    claims_isct: bool
    batch_page: strawberry.Private[tuple[dict, Connection[Batch]] | None] = None  # (arguments, page) preloaded

    @classmethod
    def of(cls, row: models.DatasetVersion) -> DatasetVersion:
        return cls(
            row=row, version=row.version, status=row.status, published_at=row.published_at,
            title=row.title, description=row.description, data_types=list(row.data_types), cell_type=row.cell_type,
            tissue=row.tissue, donor_count=row.donor_count, personal_data_level=row.personal_data_level,
            access_rights=row.access_rights, standards=list(row.standards), licence=row.licence,
            keywords=list(row.keywords), claims_isct=row.claims_isct,
        )  # fmt: skip

    @strawberry.field
    async def conditions(self, info: strawberry.Info) -> list[DataUseCondition]:
        rows = await info.context.conditions.load(self.row.id)
        return [DataUseCondition(term=r.term, parameter=r.parameter) for r in rows]

    @strawberry.field
    async def distributions(self, info: strawberry.Info) -> list[Distribution]:
        return [Distribution.of(r) for r in await info.context.distributions.load(self.row.id)]

    @strawberry.field(description="The batches this version links to (those the caller may see).")
    def batches(
        self,
        info: strawberry.Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Batch]:
        # Sync when a page of datasets preloaded this very page (see preload_batches): no task per version.
        asked = {"first": first, "after": after, "last": last, "before": before}
        if self.batch_page is not None and self.batch_page[0] == asked:
            return self.batch_page[1]
        return self._load_batches(info, asked, nodes_select(info, "qcResults"))

    async def _load_batches(self, info: strawberry.Info, asked: dict, with_qc: bool) -> Connection[Batch]:
        request = page_request(info.context.ids, **asked)
        rows = await info.context.batches_of_version.load(self.row.id)
        node_id = info.context.settings.node_id
        connection = list_connection(info.context, rows, request, lambda r: Batch.of(r, node_id))
        if with_qc:
            await Batch.preload_qc_results(info, [edge.node for edge in connection.edges])
        return connection

    @staticmethod
    async def preload_batches(info: strawberry.Info, versions: list[DatasetVersion], asked: dict, with_qc: bool):
        """The pages of batches `asked` of each version (and their QC results), one statement each for all
        versions, through the same DataLoaders; a page the arguments refuse is left to the field to report."""
        groups = await info.context.batches_of_version.load_many([version.row.id for version in versions])
        node_id = info.context.settings.node_id
        try:
            request = page_request(info.context.ids, **asked)
            pages = [list_connection(info.context, rows, request, lambda r: Batch.of(r, node_id)) for rows in groups]
        except CellCommonsError:
            return  # a bad size or cursor: each version's field reports it, in its place
        for version, page in zip(versions, pages, strict=True):
            version.batch_page = (asked, page)
        if with_qc:
            await Batch.preload_qc_results(info, [edge.node for page in pages for edge in page.edges])


@strawberry.type(description="An MSC dataset: its identity, custodian and versions.")
class Dataset(Node):
    row: strawberry.Private[models.Dataset]
    accession: str
    doi: str | None
    harvested: bool
    latest: strawberry.Private[DatasetVersion | None] = None  # see with_latest
    preloaded: strawberry.Private[bool] = False

    @classmethod
    def of(cls, row: models.Dataset, node_id: str) -> Dataset:
        return cls(row=row, accession=row.accession, doi=row.doi, harvested=row.origin_node != node_id)

    @strawberry.field(description="The custodian institution")
    async def institution(self, info: strawberry.Info) -> Institution | None:
        return await _institution(info, self.row.institution_id)

    @strawberry.field(description="The versions the caller may see, oldest first")
    async def versions(self, info: strawberry.Info) -> list[DatasetVersion]:
        return [DatasetVersion.of(r) for r in await info.context.versions.load(self.row.id)]

    @strawberry.field(description="The newest version the caller may see")
    def latest_version(self, info: strawberry.Info) -> DatasetVersion | None:
        # Sync when the dataset came with it (a page of found datasets): no statement, no task per dataset.
        return self.latest if self.preloaded else self._load_latest_version(info)

    async def _load_latest_version(self, info: strawberry.Info) -> DatasetVersion | None:
        rows = await info.context.versions.load(self.row.id)
        return DatasetVersion.of(rows[-1]) if rows else None

    def with_latest(self, version: models.DatasetVersion | None) -> Dataset:
        """This dataset with its latest visible version already read (`catalogue.search.dataset_rows`)."""
        self.latest, self.preloaded = (DatasetVersion.of(version) if version else None), True
        return self


@strawberry.type(description="A pseudonymised donor; only the owning institution sees donors.")
class Donor(Node):
    row: strawberry.Private[models.Donor]
    pseudonym: str
    relation: DonorRelation
    sex: Sex
    age_band: str | None
    eligibility: Eligibility

    @classmethod
    def of(cls, row: models.Donor) -> Donor:
        band = row.age_band_start
        return cls(
            row=row, pseudonym=row.pseudonym, relation=row.relation, sex=row.sex,
            age_band=None if band is None else f"{band}-{band + 4}", eligibility=row.eligibility,
        )  # fmt: skip


TYPES: dict[str, type] = {
    "Institution": Institution,
    "Dataset": Dataset,
    "DatasetVersion": DatasetVersion,
    "Batch": Batch,
    "Specification": Specification,
    "QcResult": QcResult,
    "Distribution": Distribution,
    "Donor": Donor,
}


def as_node(info: strawberry.Info, type_name: str, row) -> Node:
    """The GraphQL object for a row of a node type; the types that show `harvested` need this node's id."""
    node_type = TYPES[type_name]
    if node_type in (Batch, Dataset):
        return node_type.of(row, info.context.settings.node_id)
    return node_type.of(row)
