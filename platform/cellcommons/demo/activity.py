"""What makes the demo consortium look used: real files behind its distributions and access requests waiting
for a steward.

Both go through the same services as a person would: each file is uploaded to its presigned PUT URL and
completed with its checksum (the server hashes what arrived), and each request is created and submitted by a
demo researcher of another institution, so the matcher's verdicts and the audit trail are the real ones.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.access import requests
from cellcommons.access.schemas import RequestIn
from cellcommons.auth.dev_idp.users import subject
from cellcommons.auth.principal import Principal, Role
from cellcommons.catalogue.enums import AccessRights, VersionStatus
from cellcommons.catalogue.models import Dataset, DatasetVersion, Distribution, Institution
from cellcommons.settings import Settings
from cellcommons.storage import ObjectStore
from cellcommons.storage.uploads import complete_upload, request_upload

ROWS_PER_FILE = 120
SEED_ACTOR = "demo-seed"  # how the audit log names the demo's own uploads (a machine principal)
HMB = "DUO:0000006"  # health/medical/biomedical research


@dataclass(frozen=True)
class DemoFiles:
    """Uploads a generated table for every distribution of a draft version, before it is published."""

    store: ObjectStore
    settings: Settings
    http: httpx.AsyncClient
    seed: int = 2026

    async def attach(self, session: AsyncSession, institution: Institution, version: DatasetVersion) -> int:
        uploader = Principal(
            institution_id=institution.id,
            institution_slug=institution.slug,
            subject=SEED_ACTOR,
            client_id=SEED_ACTOR,
            roles=frozenset({Role.reader, Role.submitter}),
        )
        found = await session.scalars(select(Distribution).where(Distribution.dataset_version_id == version.id))
        uploaded = 0
        for distribution in found:
            content = demo_table(distribution.columns, random.Random(f"{self.seed}/{distribution.file_name}"))
            await self._upload(session, uploader, distribution.id, content)
            uploaded += 1
        return uploaded

    async def _upload(self, session: AsyncSession, uploader: Principal, distribution_id: uuid.UUID, content: bytes):
        checksum = hashlib.sha256(content).hexdigest()
        ticket = await request_upload(
            session, self.store, self.settings, uploader, distribution_id, sha256=checksum, size_bytes=len(content)
        )
        response = await self.http.put(ticket.url, content=content)
        response.raise_for_status()
        await complete_upload(session, self.store, self.settings, uploader, ticket.upload_id)


def demo_table(columns: list[dict], rng: random.Random) -> bytes:
    """A CSV with the distribution's declared columns: one row per infusion of a demo lot."""
    makers = {
        "donor_pseudonym": lambda: f"DNR-{rng.randrange(16**8):08X}",
        "age_band": lambda: f"{(start := rng.randrange(20, 75, 5))}-{start + 4}",
        "lot_number": lambda: f"LOT-{rng.randrange(10**5):05d}",
        "viability_pct": lambda: f"{rng.uniform(70, 99):.1f}",
        "adverse_events": lambda: rng.choice(["none", "none", "none", "transient fever", "infusion reaction"]),
    }
    names = [column["name"] for column in columns]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for _ in range(ROWS_PER_FILE):
        writer.writerow([makers.get(name, lambda: "")() for name in names])
    return out.getvalue().encode()


async def submit_pending_requests(session: AsyncSession, node_id: str, per_institution: int = 2) -> int:
    """Alice of each institution asks for restricted datasets of the next institution; the requests wait in
    that institution's steward queue."""
    institutions = list(await session.scalars(select(Institution).order_by(Institution.slug)))
    submitted = 0
    for requester, custodian in zip(institutions, institutions[1:] + institutions[:1], strict=True):
        if requester.id == custodian.id:
            continue
        alice = Principal(
            institution_id=requester.id,
            institution_slug=requester.slug,
            subject=subject(requester.slug, "alice"),
            roles=frozenset({Role.reader}),
        )
        for dataset_id in await _restricted_datasets(session, custodian.id, per_institution):
            purpose = _purpose(dataset_id, custodian.name)
            request = await requests.create_request(session, alice, purpose, node_id=node_id)
            await requests.submit(session, alice, request.id, node_id=node_id)
            submitted += 1
    return submitted


async def _restricted_datasets(session: AsyncSession, institution_id: uuid.UUID, limit: int) -> list[uuid.UUID]:
    query = (
        select(Dataset.id)
        .join(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
        .where(
            Dataset.institution_id == institution_id,
            DatasetVersion.status == VersionStatus.published,
            DatasetVersion.access_rights == AccessRights.restricted,
        )
        .order_by(Dataset.accession)
        .limit(limit)
    )
    return list(await session.scalars(query))


def _purpose(dataset_id: uuid.UUID, custodian: str) -> RequestIn:
    today = datetime.now(UTC).date()
    return RequestIn(
        datasets=[dataset_id],
        purpose_terms=[HMB],
        commercial_use=False,
        lay_summary=(
            f"We compare post-thaw viability of MSC lots across sites, including {custodian}, to understand "
            "which manufacturing steps keep cells alive after thawing."
        ),
        ethics_reference="METC-2026-0142",
        period_start=today,
        period_end=today + timedelta(days=365),
    )
