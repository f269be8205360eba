"""Dataset files for tests: a Leiden dataset whose files are uploaded through the real upload path."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from sqlalchemy import select
from tests.catalogue.factories import valid_dataset

from cellcommons.auth.principal import Principal, Role
from cellcommons.catalogue.enums import VersionStatus
from cellcommons.catalogue.models import Dataset, DatasetVersion, Distribution, Institution
from cellcommons.catalogue.schemas import InstitutionIn
from cellcommons.demo.consortium import INSTITUTIONS
from cellcommons.storage import ObjectStore, uploads

CSV = "text/csv"
NODE = "local"  # the tests' settings keep the default node id: records made here are not harvested copies


def member(institution: Institution, *roles: Role, subject: str = "tester") -> Principal:
    return Principal(
        institution_id=institution.id,
        institution_slug=institution.slug,
        subject=f"{subject}-{institution.slug}",
        roles=frozenset({Role.reader, *roles}),
    )


async def institution(session, slug: str) -> Institution:
    found = await session.scalar(select(Institution).where(Institution.slug == slug))
    if found is not None:
        return found
    record = next(i for i in INSTITUTIONS if i["slug"] == slug)
    created = Institution(**InstitutionIn(**record).model_dump(), origin_node=NODE)
    session.add(created)
    await session.flush()
    return created


async def draft_dataset(
    session, custodian: Institution, file_names: Iterable[str], access_rights: str = "restricted"
) -> DatasetVersion:
    """A draft dataset version of `custodian` with one distribution per name (no files uploaded yet).

    Rows are written directly: these tests are about files, whatever else the catalogue's saving does."""
    dataset = Dataset(institution_id=custodian.id, accession="CCD-T" + uuid.uuid4().hex[:9].upper(), origin_node=NODE)
    session.add(dataset)
    await session.flush()
    content = valid_dataset(access_rights=access_rights).model_dump(
        exclude={"doi", "batches", "conditions", "distributions"}
    )
    version = DatasetVersion(dataset_id=dataset.id, version=1, status=VersionStatus.draft, **content)
    version.distributions = [Distribution(file_name=name, media_type=CSV) for name in file_names]
    version.conditions = []
    session.add(version)
    await session.flush()
    return version


async def publish(session, version: DatasetVersion) -> None:
    version.status, version.published_at = VersionStatus.published, datetime.now(UTC)
    await session.flush()


async def put(url: str, content, **headers: str) -> int:
    """What a browser or script does with an upload ticket: a plain PUT to object storage."""
    async with httpx.AsyncClient(timeout=600) as http:
        return (await http.put(url, content=content, headers=headers)).status_code


async def get(url: str, **headers: str) -> httpx.Response:
    """A plain GET, as any HTTP client would fetch a download URL."""
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.get(url, headers=headers)


async def upload(session, store, settings, principal, distribution_id, data: bytes):
    """request → PUT → complete, as a submitter would; returns the completed distribution."""
    ticket = await uploads.request_upload(
        session, store, settings, principal, distribution_id,
        sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data),
    )  # fmt: skip
    assert await put(ticket.url, data) == 200
    return await uploads.complete_upload(session, store, settings, principal, ticket.upload_id)


@dataclass
class PublishedFile:
    version_id: uuid.UUID
    distribution_id: uuid.UUID
    content: bytes


async def published_file(database, store, settings, slug: str, access_rights: str, content: bytes) -> PublishedFile:
    """A committed, published dataset version of `slug` with one uploaded file (for API tests)."""
    async with database.unit_of_work() as session:
        custodian = await institution(session, slug)
        version = await draft_dataset(session, custodian, ["cells.csv"], access_rights)
        distribution = version.distributions[0]
        await upload(session, store, settings, member(custodian, Role.submitter), distribution.id, content)
        if access_rights != "non_public":
            await publish(session, version)
        return PublishedFile(version.id, distribution.id, content)


def remove_buckets(store: ObjectStore, prefix: str) -> None:
    """Remove the buckets named with `prefix`, their objects first."""
    client = store.client
    for found in client.list_buckets():
        if found.name.startswith(prefix):
            for item in client.list_objects(found.name, recursive=True):
                client.remove_object(found.name, item.object_name)
            client.remove_bucket(found.name)
