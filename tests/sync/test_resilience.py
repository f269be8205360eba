"""Retries and the circuit breaker against a small local HTTP server that answers 429 and 503.

The server stands in for a partner system's paged JSON API (the shape REDCap/Castor-style connectors read):
`GET /records?page=N` answers `{"records": [...], "next": N+1 | null}`, or a scripted error status.
"""

from __future__ import annotations

import json
import random
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlalchemy import select
from tests.sync.conftest import batch_record, recorder

from cellcommons.catalogue.schemas import BatchIn
from cellcommons.sync.models import RunStatus, SyncSource
from cellcommons.sync.resilience import BreakerPolicy, RetryPolicy
from cellcommons.sync.runtime import BreakerOpen
from cellcommons.sync.scheduler import tick
from cellcommons.sync.sdk import Connector, Page, Stream, get_json


class PartnerApi:
    """Answers from a script of statuses first (each used once), then serves two pages of records."""

    def __init__(self, script: list[int], forever: int | None = None):
        self.script, self.forever, self.requests = list(script), forever, []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                api.requests.append(self.path)
                status = api.forever or (api.script.pop(0) if api.script else 200)
                body = api.body(self.path) if status == 200 else {"error": "busy"}
                payload = json.dumps(body).encode()
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def body(self, path: str) -> dict:
        page = int(path.rsplit("=", 1)[-1])
        return {"records": [batch_record(f"API-{page}-{i}") for i in range(3)], "next": page + 1 if page < 2 else None}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def api_connector(url: str) -> type[Connector]:
    class Records(Stream):
        name = "records"
        target = "batch"
        natural_key = ("lot_number",)
        schema = BatchIn

        async def read_pages(self, bookmark):
            page = (bookmark or {}).get("page", 1)
            async with httpx.AsyncClient(timeout=5) as http:
                while page is not None:
                    body = await get_json(http, f"{url}/records?page={page}")
                    page = body["next"]
                    yield Page([self.record(r) for r in body["records"]], {"page": page})

    class Api(Connector):
        def streams(self):
            return [Records()]

    return Api


def runtime(env, url, sleeps, **options):
    return env.runtime(api_connector(url), sleep=recorder(sleeps), **options)


async def test_429_and_503_are_retried_with_backoff_and_the_run_completes(env, sleeps):
    api = PartnerApi([429, 503, 200, 503])
    try:
        await env.add_source()
        run = await runtime(env, api.url, sleeps, retry=RetryPolicy(attempts=4, base=0.5, cap=8)).run("lims")
    finally:
        api.close()
    assert run.status is RunStatus.ok and run.read_count == 6
    assert len(await env.lots()) == 6
    # page 1 after 429 and 503; page 2 once after a 503, resumed from page 1's bookmark (no page read twice)
    assert api.requests == ["/records?page=1"] * 3 + ["/records?page=2"] * 2
    assert len(sleeps) == 3
    assert sleeps[0] >= 1  # the server's Retry-After is honoured
    assert all(0 <= s <= 8 for s in sleeps)


def test_backoff_is_capped_exponential_with_full_jitter():
    policy = RetryPolicy(base=1, cap=10)
    rng = random.Random(7)
    delays = [[policy.delay(n, rng=rng) for _ in range(2000)] for n in range(6)]
    for n, drawn in enumerate(delays):
        ceiling = min(10, 2**n)
        assert 0 <= min(drawn) and max(drawn) <= ceiling
        assert max(drawn) > 0.9 * ceiling and min(drawn) < 0.1 * ceiling  # spread over the whole range
    assert policy.delay(0, retry_after=60) == 10  # Retry-After, but never beyond the cap


async def test_the_breaker_opens_after_repeated_failures_and_holds_the_source_back(env, sleeps):
    api = PartnerApi([], forever=503)
    policies = {"retry": RetryPolicy(attempts=2), "breaker": BreakerPolicy(threshold=2, cooldown=timedelta(hours=1))}
    try:
        await env.add_source(due=True)
        sync = runtime(env, api.url, sleeps, **policies)
        first = await sync.run("lims")
        second = await sync.run("lims")
        assert first.status is second.status is RunStatus.failed
        assert "HTTP 503" in second.error
        async with env.database.unit_of_work() as session:
            source = await session.scalar(select(SyncSource))
            source.next_run_at = datetime.now(UTC) - timedelta(minutes=1)  # due, but the breaker is open
        assert source.consecutive_failures == 2
        assert source.breaker_open_until > datetime.now(UTC) + timedelta(minutes=55)
        requests = len(api.requests)
        assert await tick(sync) == []
        with pytest.raises(BreakerOpen, match="circuit breaker stays open"):
            await sync.run("lims")
        assert len(api.requests) == requests  # the partner system was left alone
    finally:
        api.close()


async def test_a_success_closes_the_breaker(env, sleeps):
    api = PartnerApi([503, 503])
    try:
        await env.add_source()
        sync = runtime(env, api.url, sleeps, retry=RetryPolicy(attempts=2), breaker=BreakerPolicy(threshold=5))
        assert (await sync.run("lims")).status is RunStatus.failed
        assert (await sync.run("lims")).status is RunStatus.ok
    finally:
        api.close()
    source = await env.scalar(select(SyncSource))
    assert source.consecutive_failures == 0 and source.breaker_open_until is None
