"""`cellcommons serve` believes X-Forwarded-For / X-Forwarded-Proto from the proxies in
CELLCOMMONS_TRUSTED_PROXIES only. Shown on what the portal builds from the request's scheme: the sign-in's
redirect URI, which an ingress terminating TLS needs to be https."""

from __future__ import annotations

import asyncio
import re
import subprocess
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from tests.processes import answers, cli_environment, wait_until

from cellcommons.catalogue import service as catalogue
from cellcommons.catalogue.schemas import InstitutionIn
from cellcommons.db import Database
from cellcommons.demo.consortium import INSTITUTIONS
from cellcommons.demo.identity import register_dev_issuers
from cellcommons.demo.stack import free_port

pytestmark = pytest.mark.slow
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}


async def _institutions_with_issuers(settings, idp) -> None:
    database = Database(settings)
    try:
        async with database.unit_of_work() as session, httpx.AsyncClient(timeout=5) as http:
            for institution in INSTITUTIONS:
                await catalogue.save_institution(session, InstitutionIn(**institution), origin="test")
            await register_dev_issuers(session, http, idp)
    finally:
        await database.dispose()


def _callback_scheme(settings, trusted: str | None) -> str:
    """The scheme of the redirect URI the portal sends to the issuer, asked through a 'proxy' on loopback."""
    port = free_port()
    env = cli_environment(settings) | ({} if trusted is None else {"CELLCOMMONS_TRUSTED_PROXIES": trusted})
    server = subprocess.Popen(
        ["cellcommons", "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: server.poll() is not None or answers(f"{base}/healthz"), "the server answers")
        assert server.poll() is None, server.communicate()[0]
        with httpx.Client(base_url=base, headers=FORWARDED, timeout=10) as browser:
            page = browser.get("/sign-in")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
            answer = browser.post("/sign-in", data={"institution": INSTITUTIONS[0]["slug"], "csrf": csrf})
        assert answer.status_code == 303, answer.text
        redirect_uri = parse_qs(urlsplit(answer.headers["location"]).query)["redirect_uri"][0]
        return urlsplit(redirect_uri).scheme
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0] or ""
        assert "Traceback" not in output


def test_forwarded_headers_count_only_from_trusted_proxies(fresh_settings, dev_idp):
    asyncio.run(_institutions_with_issuers(fresh_settings, dev_idp))
    assert _callback_scheme(fresh_settings, None) == "https"  # loopback is trusted by default
    assert _callback_scheme(fresh_settings, "10.0.0.0/8") == "http"  # the ingress named is not this caller
    assert _callback_scheme(fresh_settings, "") == "http"  # no proxy trusted
