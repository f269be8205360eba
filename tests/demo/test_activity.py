"""The demo consortium's activity: real files behind its distributions, access requests waiting for stewards."""

import csv
import hashlib
import io

import httpx
from sqlalchemy import select

from cellcommons.access.models import AccessRequest, RequestedDataset, RequestStatus
from cellcommons.audit.models import AuditEvent
from cellcommons.auth.dev_idp.users import subject
from cellcommons.catalogue.models import Dataset, DatasetVersion, Distribution, Institution
from cellcommons.demo.activity import ROWS_PER_FILE, DemoFiles, submit_pending_requests
from cellcommons.demo.consortium import SCALES, Consortium
from cellcommons.demo.seed import seed_through_service
from cellcommons.storage import buckets


async def _seed(session, object_store, settings):
    async with httpx.AsyncClient(timeout=30) as http:
        files = DemoFiles(object_store, settings, http)
        return await seed_through_service(session, Consortium(SCALES["tiny"], seed=3), origin="local", files=files)


async def test_every_distribution_gets_a_verified_file_with_its_declared_columns(session, object_store, settings):
    counts = await _seed(session, object_store, settings)
    rows = (
        await session.execute(
            select(Distribution, Dataset.institution_id)
            .join(DatasetVersion, DatasetVersion.id == Distribution.dataset_version_id)
            .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        )
    ).all()
    assert counts["file"] == len(rows) == counts["dataset"] > 0
    for distribution, institution_id in rows:
        body = object_store.client.get_object(
            buckets.institution_bucket(settings, institution_id), distribution.storage_key
        ).read()
        assert hashlib.sha256(body).hexdigest() == distribution.sha256 and len(body) == distribution.size_bytes
        table = list(csv.reader(io.StringIO(body.decode())))
        assert table[0] == [column["name"] for column in distribution.columns]
        assert len(table) == ROWS_PER_FILE + 1 and all(len(row) == len(table[0]) for row in table)
    uploads = await session.scalars(select(AuditEvent.actor).where(AuditEvent.action == "file.upload_completed"))
    assert set(uploads) == {"client:demo-seed"}


async def test_researchers_of_other_institutions_wait_in_the_custodians_queue(session, object_store, settings):
    await _seed(session, object_store, settings)
    submitted = await submit_pending_requests(session, settings.node_id)
    found = (
        await session.execute(
            select(AccessRequest, Institution.slug, Dataset.institution_id)
            .join(Institution, Institution.id == AccessRequest.requester_institution_id)
            .join(RequestedDataset, RequestedDataset.request_id == AccessRequest.id)
            .join(Dataset, Dataset.id == RequestedDataset.dataset_id)
        )
    ).all()
    assert submitted == len(found) > 0
    for request, requester_slug, custodian_id in found:
        assert request.status is RequestStatus.submitted
        assert request.requester_institution_id != custodian_id
        assert request.requester_subject == subject(requester_slug, "alice")
