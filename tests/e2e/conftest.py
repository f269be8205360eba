"""The platform served on loopback with a seeded database, and headless Chromium driven by Playwright."""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from tests.auth.conftest import register_demo_issuers

from cellcommons.api.app import create_app
from cellcommons.db import Database
from cellcommons.demo.consortium import SCALES, Consortium
from cellcommons.demo.seed import seed_through_service
from cellcommons.demo.stack import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"


async def _seed(settings, idp) -> None:
    database = Database(settings)
    async with httpx.AsyncClient(timeout=5) as http, database.unit_of_work() as session:
        await register_demo_issuers(session, http, idp)
        await seed_through_service(session, Consortium(SCALES["tiny"], seed=14), origin=settings.node_id)
    await database.dispose()


class Served(str):
    """The server's base URL, with the settings of its own database (to arrange committed data for a test)."""

    settings: object


@pytest.fixture(scope="module")
def served(stack, dev_idp):
    """The API and portal under uvicorn on a free loopback port."""
    settings = stack.new_database()
    asyncio.run(_seed(settings, dev_idp))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    url = Served(f"http://127.0.0.1:{port}")
    url.settings = settings
    yield url
    server.should_exit = True
    thread.join(15)
    stack.drop(settings)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is not installed (.ci/run installs it: apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context()
    page = context.new_page()
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-last.png"), full_page=True)
    context.close()


def sign_in(page, served, institution="leiden-scgt", user="Stella Steward"):
    """Through the institution's issuer: the dev identity provider's page has one button per demo user."""
    page.goto(f"{served}/sign-in")
    page.get_by_label(institution).check()
    page.get_by_role("button", name="Continue to sign in").click()
    page.get_by_role("button", name=re.compile(user)).click()
    page.wait_for_url(f"{served}/search")


def axe_violations(page) -> list[dict]:
    """Serious and critical accessibility violations found by axe-core (from the npm registry)."""
    if not AXE.exists():
        pytest.fail("axe-core is not installed (.ci/run runs npm install)")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [v for v in result["violations"] if v["impact"] in ("serious", "critical")]
