"""Loading the synthetic consortium: through the catalogue service (tiny, demo) or with COPY (bench).

The service path validates every record as any other input would be. The bulk path writes the same records'
rows with COPY, because 100 000 batches and a million QC results through the ORM would take far too long;
tests run a sample of those records through the service to show they pass the same rules.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.catalogue import service
from cellcommons.catalogue.enums import VersionStatus
from cellcommons.catalogue.models import DatasetVersion
from cellcommons.catalogue.schemas import (
    BatchIn,
    CollectionIn,
    DatasetIn,
    DonorIn,
    InstitutionIn,
    SpecificationIn,
)
from cellcommons.db import Database, driver_connection
from cellcommons.demo.activity import DemoFiles
from cellcommons.demo.consortium import INSTITUTIONS, SCALES, Consortium, InstitutionRecords
from cellcommons.errors import InvalidInput
from cellcommons.settings import Settings

# The progress bar counts batches (with their donor, collection and QC rows) and datasets.
PROGRESS_TABLES = {"batch", "donor", "collection", "qc_result", "dataset"}

ProgressCallback = Callable[[str, int], None]


def _quiet(_table: str, _rows: int) -> None:
    return None


def dataset_input(record: dict) -> tuple[str, DatasetIn]:
    """A generated dataset record is its accession plus the content of its first version."""
    content = {k: v for k, v in record.items() if k != "accession"}
    return record["accession"], service.parse(DatasetIn, content)


async def seed_through_service(
    session: AsyncSession,
    consortium: Consortium,
    *,
    origin: str,
    progress: ProgressCallback = _quiet,
    files: DemoFiles | None = None,
) -> Counter:
    """Every record through the catalogue service; with `files`, each distribution gets a real file uploaded
    before its version is published (published versions are immutable)."""
    counts: Counter = Counter()
    for records in consortium.records():
        institution = await service.save_institution(
            session, service.parse(InstitutionIn, records.institution), origin=origin
        )
        steps = [
            ("specification", SpecificationIn, records.specifications, service.save_specification),
            ("donor", DonorIn, records.donors, service.save_donor),
            ("collection", CollectionIn, records.collections, service.save_collection),
            ("batch", BatchIn, records.batches, service.save_batch),
        ]
        for table, schema, items, save in steps:
            for item in items:
                await save(session, institution, service.parse(schema, item), origin=origin)
            counts[table] += len(items)
            progress(table, len(items))
        for record in records.datasets:
            accession, content = dataset_input(record)
            version = await service.save_dataset(session, institution, content, origin=origin, accession=accession)
            if files is not None:
                counts["file"] += await files.attach(session, institution, version)
            if content.access_rights.value != "non_public":
                await service.publish(session, institution, accession)
        counts["dataset"] += len(records.datasets)
        progress("dataset", len(records.datasets))
    return counts


# ---- bulk path -------------------------------------------------------------------------------------------


@dataclass
class TableRows:
    """Rows for one table, in COPY column order."""

    table: str
    columns: tuple[str, ...]
    rows: list[tuple]


@dataclass
class BulkRecords:
    tables: list[TableRows]
    published: list[uuid.UUID]  # dataset versions to publish once their parts are in


COLUMNS = {
    "donor": ("id", "institution_id", "pseudonym", "relation", "sex", "age_band_start", "eligibility", "origin_node"),
    "donor_test": ("id", "donor_id", "marker", "result", "tested_on"),
    "collection": ("id", "institution_id", "donor_id", "din", "tissue", "collected_on", "volume_ml",
                   "chain_of_identity_id", "origin_node"),
    "batch": ("id", "institution_id", "lot_number", "product_name", "cell_type", "tissue", "manufactured_on",
              "passage", "population_doublings", "culture_supplement", "total_cells", "concentration_1e6_per_ml",
              "volume_ml", "containers", "cryoprotectant", "dmso_percent", "storage_temperature_c", "expires_on",
              "release_status", "released_on", "specification_id", "route", "max_infusion_ml_per_kg_h",
              "origin_node"),
    "batch_donor": ("batch_id", "donor_id"),
    "batch_collection": ("batch_id", "collection_id"),
    "qc_result": ("id", "batch_id", "position", "test_type", "analyte", "method", "timepoint", "status", "value",
                  "unit", "qualitative", "passed", "tested_on"),
    "dataset": ("id", "institution_id", "accession", "origin_node"),
    "dataset_version": ("id", "dataset_id", "version", "status", "published_at", "title", "description",
                        "data_types", "cell_type", "tissue", "donor_count", "personal_data_level", "access_rights",
                        "standards", "licence", "keywords"),
    "dataset_version_batch": ("dataset_version_id", "batch_id"),
    "data_use_condition": ("id", "dataset_version_id", "term", "parameter"),
    "distribution": ("id", "dataset_version_id", "file_name", "media_type", "columns"),
}  # fmt: skip
# Parents before children, for the foreign keys.
TABLE_ORDER = list(COLUMNS)


class _RowBuilder:
    def __init__(self, records: InstitutionRecords, institution_id: uuid.UUID, spec_ids: dict, origin: str, seed: int):
        self.r = records
        self.institution_id = institution_id
        self.spec_ids = spec_ids
        self.origin = origin
        self.rng = random.Random(seed)
        self.rows: dict[str, list[tuple]] = {t: [] for t in TABLE_ORDER}
        self.published: list[uuid.UUID] = []

    def _id(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def build(self) -> BulkRecords:
        donors = {d["pseudonym"]: self._donor(d) for d in self.r.donors}
        collections = {c["din"]: self._collection(c, donors) for c in self.r.collections}
        batches = {b["lot_number"]: self._batch(b, donors, collections) for b in self.r.batches}
        for d in self.r.datasets:
            self._dataset(d, batches)
        return BulkRecords([TableRows(t, COLUMNS[t], self.rows[t]) for t in TABLE_ORDER], self.published)

    def _donor(self, d: dict) -> uuid.UUID:
        donor_id = self._id()
        self.rows["donor"].append((donor_id, self.institution_id, d["pseudonym"], d["relation"], d["sex"],
                                   d["age_band_start"], d["eligibility"], self.origin))  # fmt: skip
        for t in d["tests"]:
            self.rows["donor_test"].append((self._id(), donor_id, t["marker"], t["result"], t["tested_on"]))
        return donor_id

    def _collection(self, c: dict, donors: dict) -> uuid.UUID:
        collection_id = self._id()
        self.rows["collection"].append((
            collection_id, self.institution_id, donors[c["donor"]], c["din"], c["tissue"], c["collected_on"],
            c["volume_ml"], c["chain_of_identity_id"], self.origin,
        ))  # fmt: skip
        return collection_id

    def _batch(self, b: dict, donors: dict, collections: dict) -> uuid.UUID:
        batch_id = self._id()
        g = b.get
        self.rows["batch"].append((
            batch_id, self.institution_id, b["lot_number"], b["product_name"], b["cell_type"], b["tissue"],
            g("manufactured_on"), g("passage"), g("population_doublings"), g("culture_supplement"),
            g("total_cells"), g("concentration_1e6_per_ml"), g("volume_ml"), g("containers"), g("cryoprotectant"),
            g("dmso_percent"), g("storage_temperature_c"), g("expires_on"), b["release_status"], g("released_on"),
            self.spec_ids[b["specification_version"]], g("route"), g("max_infusion_ml_per_kg_h"), self.origin,
        ))  # fmt: skip
        self.rows["batch_donor"] += [(batch_id, donors[p]) for p in b["donors"]]
        self.rows["batch_collection"] += [(batch_id, collections[c]) for c in b["collections"]]
        for position, q in enumerate(b["qc_results"]):
            g = q.get
            self.rows["qc_result"].append((
                self._id(), batch_id, position, q["test_type"], g("analyte"), g("method"), g("timepoint"),
                q["status"], g("value"), g("unit"), g("qualitative"), g("passed"), g("tested_on"),
            ))  # fmt: skip
        return batch_id

    def _dataset(self, d: dict, batches: dict) -> None:
        dataset_id, version_id = self._id(), self._id()
        if d["access_rights"] != "non_public":
            self.published.append(version_id)
        self.rows["dataset"].append((dataset_id, self.institution_id, d["accession"], self.origin))
        # Written as drafts: a published version's parts cannot be added (see `publish_versions`).
        self.rows["dataset_version"].append((
            version_id, dataset_id, 1, "draft", None, d["title"], d["description"], d["data_types"],
            d["cell_type"], d["tissue"], d["donor_count"], d["personal_data_level"], d["access_rights"],
            d["standards"], d["licence"], d["keywords"],
        ))  # fmt: skip
        self.rows["dataset_version_batch"] += [(version_id, batches[lot]) for lot in d["batches"]]
        for c in d["conditions"]:
            parameter = {k: v for k, v in c.items() if k != "term"}
            self.rows["data_use_condition"].append((self._id(), version_id, c["term"], Jsonb(parameter)))
        for f in d["distributions"]:
            self.rows["distribution"].append(
                (self._id(), version_id, f["file_name"], f["media_type"], Jsonb(f["columns"]))
            )


async def copy_rows(
    connection: AsyncConnection, tables: Iterable[TableRows], progress: ProgressCallback = _quiet
) -> int:
    total = 0
    async with connection.cursor() as cursor:
        for t in tables:
            if not t.rows:
                continue
            async with cursor.copy(f"COPY {t.table} ({', '.join(t.columns)}) FROM STDIN") as copy:
                for row in t.rows:
                    await copy.write_row(row)
            total += len(t.rows)
            progress(t.table, len(t.rows))
    return total


async def bulk_rows(session: AsyncSession, records: InstitutionRecords, *, origin: str, seed: int) -> list[TableRows]:
    """The institution and its specifications through the service; everything else as COPY rows."""
    institution = await service.save_institution(
        session, service.parse(InstitutionIn, records.institution), origin=origin
    )
    spec_ids = {}
    for s in records.specifications:
        spec = await service.save_specification(session, institution, service.parse(SpecificationIn, s), origin=origin)
        spec_ids[spec.version] = spec.id
    return _RowBuilder(records, institution.id, spec_ids, origin, seed).build()


async def seed_bulk(
    session: AsyncSession, consortium: Consortium, *, origin: str, progress: ProgressCallback = _quiet
) -> Counter:
    counts: Counter = Counter()
    connection = await driver_connection(session)
    for index, records in enumerate(consortium.records()):
        bulk = await bulk_rows(session, records, origin=origin, seed=consortium.seed * 7919 + index)
        await copy_rows(connection, bulk.tables, progress)
        await publish_versions(session, bulk.published)
        counts.update({t.table: len(t.rows) for t in bulk.tables})
    return counts


async def publish_versions(session: AsyncSession, version_ids: list[uuid.UUID]) -> None:
    await session.execute(
        update(DatasetVersion)
        .where(DatasetVersion.id.in_(version_ids))
        .values(status=VersionStatus.published, published_at=func.now())
    )


async def run_seed(settings: Settings, scale_name: str, seed: int, console: Console) -> Counter:
    """`cellcommons seed`: one transaction, so an interrupted seed leaves nothing behind."""
    if scale_name not in SCALES:
        raise InvalidInput(f"unknown scale {scale_name!r}; choose one of {', '.join(SCALES)}", field="scale")
    scale = SCALES[scale_name]
    consortium = Consortium(scale, seed)
    load = seed_bulk if scale_name == "bench" else seed_through_service
    expected = len(INSTITUTIONS) * (
        scale.batches_per_institution * (3 + scale.qc_per_batch) + scale.datasets_per_institution
    )
    database = Database(settings)
    try:
        with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=console) as bar:
            task = bar.add_task(f"seeding ({scale_name})", total=expected)
            advance = lambda table, n: bar.advance(task, n if table in PROGRESS_TABLES else 0)  # noqa: E731
            async with database.unit_of_work() as session:
                return await load(session, consortium, origin=settings.node_id, progress=advance)
    finally:
        await database.dispose()
