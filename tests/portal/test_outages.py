"""The portal when a component it depends on is down: the error page says so and asks to try again (503), as
the API does; it is not the page of an unexpected error (500). The database is a real PostgreSQL URL on a port
nothing listens on, so the driver's own refusal is what the portal meets."""

from __future__ import annotations

from types import SimpleNamespace

import httpx

from cellcommons.db import Database
from cellcommons.demo.stack import free_port
from cellcommons.portal.app import create_portal
from cellcommons.settings import Environment, Settings


async def test_a_database_outage_is_the_try_again_page_not_an_unexpected_error():
    settings = Settings(
        _env_file=None, environment=Environment.test, database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/gone"
    )
    database = Database(settings)
    try:
        portal = create_portal(settings, lambda: SimpleNamespace(database=database))
        transport = httpx.ASGITransport(app=portal, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            page = await client.get("/sign-in")
    finally:
        await database.dispose()
    assert page.status_code == 503
    assert "Temporarily unavailable" in page.text and "The database is unavailable" in page.text
    assert "refused" not in page.text.lower()  # the driver's words stay in the log
