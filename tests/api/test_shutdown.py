"""Graceful shutdown of `cellcommons serve`: on SIGTERM it stops taking connections, lets the request in flight
finish and commit, then exits (re-raising the signal, as uvicorn does, so the exit status says SIGTERM).

The request is held in flight deterministically: the token endpoint appends an audit event, which takes the
audit chain head's row lock; the test holds that lock from another connection until the signal has arrived.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
from sqlalchemy import func, select
from tests.processes import answers, cli_environment, wait_until

from cellcommons.audit.models import AuditEvent
from cellcommons.catalogue import service as catalogue
from cellcommons.catalogue.schemas import InstitutionIn
from cellcommons.db import Database
from cellcommons.demo.consortium import INSTITUTIONS
from cellcommons.demo.stack import free_port
from cellcommons.institutions import clients

pytestmark = pytest.mark.slow


def _waiting_on_a_lock(owner_url: str) -> bool:
    with psycopg.connect(owner_url, autocommit=True) as connection:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        return connection.execute(query).fetchone()[0] > 0


async def _machine_client(settings) -> clients.NewClient:
    database = Database(settings)
    try:
        async with database.unit_of_work() as session:
            await catalogue.save_institution(session, InstitutionIn(**INSTITUTIONS[0]), origin="test")
            return await clients.add_client(session, institution_slug=INSTITUTIONS[0]["slug"])
    finally:
        await database.dispose()


async def _tokens_issued(settings) -> int:
    database = Database(settings)
    try:
        async with database.unit_of_work() as session:
            query = select(func.count()).where(AuditEvent.action == "auth.client_token_issued")
            return await session.scalar(query)
    finally:
        await database.dispose()


def test_sigterm_lets_the_request_in_flight_finish_and_commit(fresh_settings):
    added = asyncio.run(_machine_client(fresh_settings))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        ["cellcommons", "serve", "--port", str(port), "--graceful-timeout", "20"],
        env=cli_environment(fresh_settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    owner_url = fresh_settings.owner_url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        wait_until(lambda: server.poll() is not None or answers(f"{base}/healthz"), "the server answers")
        assert server.poll() is None, server.communicate()[0]
        with psycopg.connect(owner_url) as holder, ThreadPoolExecutor(1) as pool:
            holder.execute("SELECT * FROM audit_chain_head FOR UPDATE")
            in_flight = pool.submit(
                httpx.post,
                f"{base}/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(added.client.client_id, added.secret),
                timeout=30,
            )
            wait_until(lambda: _waiting_on_a_lock(owner_url), "the request waits")
            server.send_signal(signal.SIGTERM)
            wait_until(lambda: not answers(f"{base}/healthz"), "new connections stop")
            assert server.poll() is None and not in_flight.done()
            holder.rollback()  # the request in flight may go on
            response = in_flight.result(timeout=30)
        assert response.status_code == 200 and response.json()["token_type"] == "Bearer"
        # uvicorn re-raises the signal it handled once it has shut down: the conventional "terminated by SIGTERM".
        assert server.wait(timeout=30) == -signal.SIGTERM
    finally:
        if server.poll() is None:
            server.kill()
        output = server.communicate()[0] or ""
    assert "Traceback" not in output
    assert asyncio.run(_tokens_issued(fresh_settings)) == 1  # its audit event was committed before the exit
