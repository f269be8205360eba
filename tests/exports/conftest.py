"""A database of this module's own with committed data (the worker reads and writes through its own
connections): Leiden publishes a restricted dataset; Lowlands and Stroma each hold an agreement covering it
(quasi-identifiers generalised); Maple holds none. Files are put into Leiden's bucket as the upload path would
leave them (key, size and SHA-256 recorded on the distribution).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import uuid
from dataclasses import dataclass
from datetime import date, timedelta

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from tests.access.conftest import HMB, INSTITUTIONS, Consortium, person, publish_dataset
from tests.access.test_agreements import _agreement
from tests.catalogue.factories import LOT, valid_batch, valid_dataset
from tests.graphql.conftest import api, seeded_settings  # noqa: F401  (the in-process API, for test_graphql)

from cellcommons.access.models import Agreement
from cellcommons.auth.principal import Principal
from cellcommons.catalogue import service as catalogue
from cellcommons.catalogue.models import Dataset, Distribution
from cellcommons.catalogue.schemas import InstitutionIn
from cellcommons.db import Database
from cellcommons.exports.models import ExportJob, ExportStatus
from cellcommons.exports.service import issue_export_download_url, request_export
from cellcommons.exports.worker import ExportWorker
from cellcommons.storage import ObjectStore, buckets

TODAY = date.today()
NODE = "local"
GENERALISE = {"direct_identifier": "drop", "quasi_identifier": "generalise", "sensitive": "drop", "plain": "keep"}


@dataclass
class World:
    settings: object
    database: Database
    store: ObjectStore
    consortium: Consortium
    agreements: dict[str, Agreement]  # by recipient: "lowlands", "stroma"

    def member(self, key: str, subject: str = "alice") -> Principal:
        return person(self.consortium.institutions[key], subject)

    def worker(self, **options) -> ExportWorker:
        return ExportWorker(self.database, self.store, self.settings, **options)

    async def add_file(
        self, name: str, data: bytes, columns: list[dict], media_type: str = "text/csv"
    ) -> tuple[uuid.UUID, uuid.UUID]:
        """A new published version of Leiden's dataset with this file (stored and recorded); its (version,
        distribution) ids. The agreements cover later versions."""
        leiden = self.consortium.institutions["leiden"]
        bucket = buckets.institution_bucket(self.settings, leiden.id)
        self.store.ensure_bucket(bucket)
        key = f"files/{uuid.uuid4()}"
        self.store.put_stream(bucket, key, io.BytesIO(data), len(data))
        file = dict(file_name=name, media_type=media_type, columns=columns)
        content = valid_dataset(batches=[LOT], conditions=[HMB], distributions=[file])
        accession = self.consortium.datasets["leiden"].accession
        async with self.database.unit_of_work() as session:
            draft = await catalogue.save_dataset(session, leiden, content, origin=NODE, accession=accession)
            distribution = await session.scalar(select(Distribution).where(Distribution.dataset_version_id == draft.id))
            distribution.storage_key, distribution.size_bytes = key, len(data)
            distribution.sha256 = hashlib.sha256(data).hexdigest()
            await session.flush()
            await catalogue.publish(session, leiden, accession)
            return draft.id, distribution.id

    async def replace_file_bytes(self, distribution_id: uuid.UUID, data: bytes) -> None:
        """Overwrite the stored object behind the platform's back (the recorded SHA-256 stays)."""
        async with self.database.unit_of_work() as session:
            distribution = await session.get_one(Distribution, distribution_id)
        bucket = buckets.institution_bucket(self.settings, self.consortium.institutions["leiden"].id)
        self.store.put_stream(bucket, distribution.storage_key, io.BytesIO(data), len(data))

    async def job(self, export_id: uuid.UUID) -> ExportJob:
        async with self.database.unit_of_work() as session:
            return await session.get_one(ExportJob, export_id)

    async def finished(self, export_id: uuid.UUID, seconds: float = 30) -> ExportJob:
        """The job once a worker elsewhere has finished it (succeeded or failed)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            job = await self.job(export_id)
            if job.status in {ExportStatus.succeeded, ExportStatus.failed}:
                return job
            await asyncio.sleep(0.2)
        raise AssertionError(f"export {export_id} still {job.status} after {seconds} s")

    async def result(self, job: ExportJob, recipient: str) -> bytes:
        """The export's file, fetched like a recipient would: through a presigned URL."""
        async with self.database.unit_of_work() as session:
            link = await issue_export_download_url(session, self.store, self.settings, self.member(recipient), job.id)
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(link.url)
        assert response.status_code == 200
        return response.content

    def exported_keys(self, agreement: str) -> list[str]:
        prefix = f"{self.agreements[agreement].id}/"
        bucket = buckets.exports_bucket(self.settings)
        if not self.store.client.bucket_exists(bucket):
            return []
        return [o.object_name for o in self.store.client.list_objects(bucket, prefix=prefix, recursive=True)]


async def make_world(settings) -> World:
    """The consortium, the dataset and the agreements, committed in the database `settings` name."""
    database = Database(settings)
    async with database.unit_of_work() as session:
        institutions = {
            key: await catalogue.save_institution(session, InstitutionIn(**data), origin=NODE)
            for key, data in INSTITUTIONS.items()
        }
        lot = valid_batch(donors=[], collections=[], specification_version=None, release_status="quarantine",
                          released_on=None)  # fmt: skip
        await catalogue.save_batch(session, institutions["leiden"], lot, origin=NODE)
        version = await publish_dataset(session, institutions["leiden"], NODE, batches=[LOT])
        dataset = await session.get_one(Dataset, version.dataset_id)
        consortium = Consortium(institutions, {"leiden": dataset}, {"leiden": version}, NODE)
        term = dict(effective_on=TODAY - timedelta(days=10), expires_on=TODAY + timedelta(days=100))
        agreements = {
            key: await _agreement(
                session, consortium, recipient=key, export_policy=GENERALISE, covers_later_versions=True, **term
            )
            for key in ("lowlands", "stroma")
        }
    return World(settings, database, ObjectStore.from_settings(settings), consortium, agreements)


@pytest.fixture(scope="module")
async def world(stack):
    settings = stack.new_database()
    made = await make_world(settings)
    yield made
    await made.database.dispose()
    stack.drop(settings)


async def request(world: World, who: str, agreement: str = "lowlands", **changes) -> ExportJob:
    """An export requested by a member of `who` under `agreement` (by recipient); of the first version's
    catalogue batches unless `changes` say otherwise (a file's `dataset_version_id` and `distribution_id`)."""
    version = world.consortium.versions["leiden"].id
    arguments = dict(agreement_id=world.agreements[agreement].id, dataset_version_id=version)
    async with world.database.unit_of_work() as session:
        return await request_export(session, world.settings, world.member(who), **{**arguments, **changes})


class Draws:
    """Seeded uniform draws from Arrow's generator, for sources of many rows (numpy is not a dependency)."""

    def __init__(self, seed: int):
        self.seed = seed

    def uniform(self, low: float, high: float, size: int) -> pa.Array:
        self.seed += 1
        return pc.add(pc.multiply(pc.random(size, initializer=self.seed), high - low), low)

    def integers(self, low: int, high: int, size: int) -> pa.Array:
        """From `low` up to `high`, excluded."""
        return pc.cast(pc.floor(self.uniform(low, high, size)), pa.int64())


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


async def committed(world: World, work):
    async with world.database.unit_of_work() as session:
        return await work(session)


async def agreement_row(world: World, key: str) -> Agreement:
    async with world.database.unit_of_work() as session:
        return await session.scalar(select(Agreement).where(Agreement.id == world.agreements[key].id))
