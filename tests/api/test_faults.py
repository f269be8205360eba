"""Faults: PostgreSQL and the S3 server stop while the API serves; it answers 503 naming what is down, writes
nothing half-way, and serves again once they are back, without a restart.

The servers are the test's own (an embedded PostgreSQL and an S3 server on their own data folders), so they
can be stopped and started without touching the session's. The app runs in-process with its lifespan, the
same object throughout the outage: "recovers" means that very app answers again.
"""

from __future__ import annotations

import asyncio
import base64
import io
import secrets

import httpx
import pytest
from sqlalchemy import func, select
from tests.auth.conftest import register_demo_issuers
from tests.outages import own_servers

from cellcommons.api.app import create_app
from cellcommons.audit.models import AuditEvent
from cellcommons.audit.verify import verify_database
from cellcommons.catalogue import service as catalogue
from cellcommons.catalogue.models import Batch
from cellcommons.catalogue.schemas import BatchIn, InstitutionIn
from cellcommons.db import Database
from cellcommons.demo.consortium import SCALES, Consortium
from cellcommons.demo.seed import seed_through_service
from cellcommons.institutions import clients
from cellcommons.outages import DATABASE_DOWN, unavailable_from

pytestmark = pytest.mark.slow

INSTITUTIONS = "{ institutions(first: 20) { totalCount nodes { id } } }"


@pytest.fixture(scope="module")
async def outage(tmp_path_factory, dev_idp):
    with own_servers(tmp_path_factory.mktemp("faults")) as state:
        database = Database(state.settings)
        async with httpx.AsyncClient(timeout=5) as http, database.unit_of_work() as session:
            await register_demo_issuers(session, http, dev_idp)
            await seed_through_service(session, Consortium(SCALES["tiny"], seed=18), origin=state.settings.node_id)
        await database.dispose()
        yield state


@pytest.fixture
async def api(outage):
    app = create_app(outage.settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cellcommons.test") as client:
            yield client


@pytest.fixture
def token(dev_idp) -> dict:
    return {"Authorization": f"Bearer {dev_idp.issue_access_token('leiden-scgt', 'alice')}"}


def _error_code(response: httpx.Response) -> str:
    body = response.json()
    if "error" in body:  # REST shape
        return body["error"]["code"]
    return body["errors"][0]["extensions"]["code"]  # GraphQL shape


async def _institutions(api, token) -> httpx.Response:
    return await api.post("/graphql", json={"query": INSTITUTIONS}, headers=token)


async def test_readiness_names_object_storage_while_it_is_down(outage, api):
    assert (await api.get("/readyz")).json() == {
        "status": "ready",
        "checks": {"database": "ok", "object_storage": "ok"},
        "issuers": {},
    }
    outage.stop_s3()
    try:
        response = await api.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["error"]["code"] == "unavailable"
        assert body["error"]["down"] == ["object_storage"]
        assert "object_storage" in body["error"]["message"]
        assert body["checks"]["database"] == "ok"
        assert (await api.get("/healthz")).status_code == 200  # alive: no reason to restart the process
    finally:
        outage.start_s3()
    assert (await api.get("/readyz")).status_code == 200


async def test_the_api_answers_503_while_postgres_is_down_and_serves_again_after(outage, api, token):
    before = await _institutions(api, token)
    assert before.status_code == 200 and before.json()["data"]["institutions"]["totalCount"] == 4
    outage.stop_postgres()
    try:
        during = await _institutions(api, token)
        assert during.status_code == 503, during.text
        assert _error_code(during) == "unavailable"
        assert DATABASE_DOWN in during.text
        ready = await api.get("/readyz")
        assert ready.status_code == 503 and ready.json()["error"]["down"] == ["database"]
    finally:
        outage.start_postgres()
    after = await _institutions(api, token)
    assert after.status_code == 200
    assert after.json()["data"] == before.json()["data"]
    assert (await api.get("/readyz")).status_code == 200


async def test_requests_in_flight_when_postgres_stops_get_data_or_503_never_500(outage, api, token):
    async def one() -> httpx.Response:
        return await _institutions(api, token)

    flight = [asyncio.create_task(one()) for _ in range(30)]
    await asyncio.sleep(0.05)
    await asyncio.to_thread(outage.stop_postgres)
    try:
        answers = await asyncio.gather(*flight)
    finally:
        outage.start_postgres()
    statuses = {r.status_code for r in answers}
    assert statuses <= {200, 503}, [r.text for r in answers if r.status_code not in {200, 503}]
    assert all(_error_code(r) == "unavailable" for r in answers if r.status_code == 503)
    assert (await _institutions(api, token)).status_code == 200


async def test_a_token_request_during_the_outage_is_refused_and_leaves_no_trace(outage, api):
    database = Database(outage.settings)
    try:
        async with database.unit_of_work() as session:
            added = await clients.add_client(session, institution_slug="leiden-scgt", roles=["reader"], name="faults")
        basic = base64.b64encode(f"{added.client.client_id}:{added.secret}".encode()).decode()
        form = {"grant_type": "client_credentials"}
        headers = {"Authorization": f"Basic {basic}"}
        async with database.unit_of_work() as session:
            events_before = await session.scalar(select(func.count()).select_from(AuditEvent))

        outage.stop_postgres()
        try:
            refused = await api.post("/oauth/token", data=form, headers=headers)
        finally:
            outage.start_postgres()
        assert refused.status_code == 503 and _error_code(refused) == "unavailable"

        async with database.unit_of_work() as session:
            assert await session.scalar(select(func.count()).select_from(AuditEvent)) == events_before
        issued = await api.post("/oauth/token", data=form, headers=headers)
        assert issued.status_code == 200, issued.text
        assert (await verify_database(outage.settings)).intact
    finally:
        await database.dispose()


async def test_a_write_cut_off_before_its_commit_leaves_nothing_behind(outage):
    database = Database(outage.settings)
    records = next(Consortium(SCALES["tiny"], seed=18).records())
    lot = dict(records.batches[0], lot_number="FAULT-0001")
    try:
        with pytest.raises(Exception) as cut:  # whatever the driver raises, it must count as an outage
            async with database.unit_of_work() as session:
                institution = await catalogue.save_institution(
                    session, catalogue.parse(InstitutionIn, records.institution), origin="local"
                )
                await catalogue.save_batch(session, institution, catalogue.parse(BatchIn, lot), origin="local")
                await asyncio.to_thread(outage.stop_postgres)
        outage.start_postgres()
        assert unavailable_from(cut.value) is not None, repr(cut.value)
        async with database.unit_of_work() as session:
            assert await session.scalar(select(Batch).where(Batch.lot_number == "FAULT-0001")) is None
        assert (await verify_database(outage.settings)).intact
    finally:
        await database.dispose()


async def test_the_s3_server_back_on_its_port_is_the_same_store(outage):
    """The restart the tests rely on keeps the data: an object written before is there after."""
    client = outage.s3.client()
    bucket = "cc-faults-" + secrets.token_hex(4)
    client.make_bucket(bucket)
    client.put_object(bucket, "kept", io.BytesIO(b"kept"), 4)
    outage.stop_s3()
    outage.start_s3()
    assert outage.s3.client().get_object(bucket, "kept").read() == b"kept"
