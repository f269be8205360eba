"""`/readyz` on the session's servers, and which failures count as outages (real errors from PostgreSQL)."""

from __future__ import annotations

import httpx
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from tests.auth.conftest import register_demo_issuers

from cellcommons.api.app import create_app
from cellcommons.db import Database, make_engine
from cellcommons.demo.stack import free_port
from cellcommons.errors import Unavailable
from cellcommons.outages import DATABASE_DOWN, unavailable_from


async def _readyz(settings) -> httpx.Response:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cellcommons.test") as client:
            return await client.get("/readyz")


async def test_ready_when_database_and_object_storage_answer(settings):
    response = await _readyz(settings)
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "object_storage": "ok"}, "issuers": {}}


async def test_a_partner_issuers_failing_jwks_is_reported_but_never_makes_the_instance_unready(
    fresh_settings, clean_dev_idp
):
    idp = clean_dev_idp
    database = Database(fresh_settings)
    async with httpx.AsyncClient(timeout=5) as http, database.unit_of_work() as session:
        await register_demo_issuers(session, http, idp)
    await database.dispose()
    app = create_app(fresh_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cellcommons.test") as client:

            async def whoami() -> httpx.Response:
                token = idp.issue_access_token("leiden-scgt", "alice")
                return await client.get("/whoami", headers={"Authorization": f"Bearer {token}"})

            assert (await whoami()).json()["institution"] == "leiden-scgt"
            issuer = idp.issuer("leiden-scgt")
            assert (await client.get("/readyz")).json()["issuers"] == {issuer: "ok: 1 keys"}

            idp.set_jwks_down("leiden-scgt", True)
            idp.rotate_key("leiden-scgt")  # a token with a new key makes the validator refetch, which fails
            app.state.resources.validator.refetch_interval = 0
            assert (await whoami()).status_code == 401
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            assert ready.json()["issuers"][issuer].startswith("refresh failing (HTTPStatusError")


async def test_an_unreachable_object_store_is_named_and_answers_fast(settings):
    response = await _readyz(settings.model_copy(update={"s3_endpoint": f"127.0.0.1:{free_port()}"}))
    assert response.status_code == 503
    body = response.json()
    assert body["error"]["code"] == "unavailable" and body["error"]["down"] == ["object_storage"]
    assert body["checks"]["database"] == "ok"
    assert response.headers["cache-control"] == "no-store"


async def test_wrong_object_storage_credentials_are_not_ready(settings):
    response = await _readyz(settings.model_copy(update={"s3_access_key": "not-a-known-key"}))
    assert response.status_code == 503
    assert response.json()["error"]["down"] == ["object_storage"]


async def test_no_object_storage_configured_is_not_ready(settings):
    response = await _readyz(settings.model_copy(update={"s3_endpoint": None}))
    assert response.status_code == 503
    assert "CELLCOMMONS_S3_ENDPOINT" in response.json()["checks"]["object_storage"]


async def test_a_refused_connection_is_an_outage(settings):
    closed = settings.app_url.set(host="127.0.0.1", port=free_port(), query={})
    engine = make_engine(closed)
    try:
        with pytest.raises(DBAPIError) as refused:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    outage = unavailable_from(refused.value)
    assert isinstance(outage, Unavailable) and outage.message == DATABASE_DOWN and outage.status == 503


async def test_errors_from_a_working_server_are_not_outages(app_engine):
    async with app_engine.connect() as connection:
        await connection.execute(text("SET statement_timeout = 1"))
        with pytest.raises(DBAPIError) as cancelled:
            await connection.execute(text("SELECT pg_sleep(1)"))
    assert isinstance(cancelled.value.orig, psycopg.errors.QueryCanceled)  # an OperationalError, yet no outage
    assert unavailable_from(cancelled.value) is None
    assert unavailable_from(ValueError("a bug")) is None
