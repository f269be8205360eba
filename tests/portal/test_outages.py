"""The portal when a component it depends on is down: the error page says so and asks to try again (503), as
the API does; it is not the page of an unexpected error (500)."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import psycopg
from urllib3.exceptions import ProtocolError

from cellcommons.portal.app import create_portal
from cellcommons.settings import Environment, Settings


class DownDatabase:
    """A database whose sessions fail with what the driver (or client) raises when its server is gone."""

    def __init__(self, error: Exception):
        self.error = error

    def sessions(self):
        raise self.error


def portal_failing_with(error: Exception) -> httpx.AsyncClient:
    resources = SimpleNamespace(database=DownDatabase(error))
    portal = create_portal(Settings(_env_file=None, environment=Environment.test), lambda: resources)
    transport = httpx.ASGITransport(app=portal, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


async def test_a_database_outage_is_the_try_again_page_not_an_unexpected_error():
    refused = psycopg.OperationalError("connection to server at 127.0.0.1 failed: Connection refused")
    async with portal_failing_with(refused) as client:
        page = await client.get("/sign-in")
    assert page.status_code == 503
    assert "Temporarily unavailable" in page.text and "The database is unavailable" in page.text
    assert "Connection refused" not in page.text  # the driver's words stay in the log


async def test_an_object_storage_outage_is_the_try_again_page():
    async with portal_failing_with(ProtocolError("Connection aborted.")) as client:
        page = await client.get("/sign-in")
    assert page.status_code == 503 and "Object storage is unavailable" in page.text
