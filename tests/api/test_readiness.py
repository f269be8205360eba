"""`/readyz` on the session's servers, and which failures count as outages (real errors from PostgreSQL)."""

from __future__ import annotations

import httpx
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from cellcommons.api.app import create_app
from cellcommons.db import make_engine
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
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "object_storage": "ok"}}


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
