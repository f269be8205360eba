"""`/readyz` on the session's servers, and which failures count as outages (real errors from PostgreSQL)."""

from __future__ import annotations

import logging
import socket

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


async def test_an_unreachable_object_store_is_named_without_saying_where(settings, caplog):
    port = str(free_port())  # nothing listens there: an S3 server that is stopped
    with caplog.at_level(logging.WARNING, logger="cellcommons.health"):
        response = await _readyz(settings.model_copy(update={"s3_endpoint": f"127.0.0.1:{port}"}))
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == {
        "code": "unavailable",
        "message": "not ready: object_storage (unreachable)",
        "down": ["object_storage"],
    }
    assert body["checks"] == {"database": "ok", "object_storage": "unreachable"}
    assert response.headers["cache-control"] == "no-store"
    _assert_nothing_internal(response, "127.0.0.1", port, settings.bucket("audit"))
    assert f"127.0.0.1:{port}" in caplog.text


async def test_wrong_object_storage_credentials_are_refused_credentials(settings, caplog):
    with caplog.at_level(logging.WARNING, logger="cellcommons.health"):
        response = await _readyz(settings.model_copy(update={"s3_access_key": "not-a-known-key"}))
    assert response.status_code == 503
    assert response.json()["error"]["down"] == ["object_storage"]
    assert response.json()["checks"]["object_storage"] == "refused credentials"
    _assert_nothing_internal(response, "not-a-known-key", settings.bucket("audit"), settings.s3_endpoint)
    assert f"{settings.s3_endpoint} (bucket {settings.bucket('audit')}) refused credentials" in caplog.text


async def test_no_object_storage_configured_is_not_ready(settings):
    response = await _readyz(settings.model_copy(update={"s3_endpoint": None}))
    assert response.status_code == 503
    assert "CELLCOMMONS_S3_ENDPOINT" in response.json()["checks"]["object_storage"]


def _database_at(settings, **parts) -> object:
    """`settings` with the application role's URL changed (`host`, `port`, `username`). A new host replaces the
    embedded server's socket folder (its `host` query parameter), which libpq would otherwise take instead."""
    url = settings.app_url.set(**parts)
    url = url.set(query={}) if "host" in parts else url
    return settings.model_copy(update={"app_database_url": url.render_as_string(hide_password=False)})


def _assert_nothing_internal(response: httpx.Response, *internals: str) -> None:
    for internal in internals:
        assert internal not in response.text


async def test_a_database_on_a_closed_port_is_unreachable_without_naming_where(settings, caplog):
    port = str(free_port())
    with caplog.at_level(logging.WARNING, logger="cellcommons.health"):
        response = await _readyz(_database_at(settings, host="127.0.0.1", port=int(port)))
    assert response.status_code == 503
    body = response.json()
    assert body["checks"] == {"database": "unreachable", "object_storage": "ok"}
    assert body["error"]["message"] == "not ready: database (unreachable)"
    _assert_nothing_internal(response, "127.0.0.1", port, "OperationalError", "Connection refused")
    assert port in caplog.text and "database" in caplog.text  # the operator still learns where and why


async def test_a_database_refusing_the_role_refused_the_connection(settings, caplog):
    with caplog.at_level(logging.WARNING, logger="cellcommons.health"):
        response = await _readyz(_database_at(settings, username="no_such_role"))
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "refused the connection"
    _assert_nothing_internal(response, "no_such_role", settings.app_url.database)
    assert "no_such_role" in caplog.text


async def test_a_database_that_never_answers_timed_out(settings):
    with socket.socket() as silent:  # accepts the connection (the backlog does), never speaks PostgreSQL
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        response = await _readyz(_database_at(settings, host="127.0.0.1", port=silent.getsockname()[1]))
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "timed out"


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
