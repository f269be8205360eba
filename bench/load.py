"""Load: `cellcommons serve --workers N` under open-loop GraphQL clients asking for a 20-dataset page, against
`/healthz` on the same server with the same arrival schedule (the baseline: HTTP, uvicorn and the client's own
cost, without the platform's work).

Open loop: every client sends on a fixed schedule whether or not earlier answers came back, and latency counts
from the scheduled send time, so a slow server cannot hide its queueing by slowing the clients down
(coordinated omission). The clients run on the same machine as the server and take some of its CPU.

`seed` and `served` are shared with `bench graphql`, whose concurrency part drives the same server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from sqlalchemy import create_engine

from bench.report import Measure, Report
from cellcommons.auth.dev_idp import DevIdentityProvider
from cellcommons.db import Database
from cellcommons.demo.consortium import Consortium, Scale
from cellcommons.demo.identity import register_dev_issuers
from cellcommons.demo.scratch import ScratchStack
from cellcommons.demo.seed import seed_bulk
from cellcommons.demo.stack import free_port
from cellcommons.settings import Environment, Settings

CLIENTS = 50
WORKERS = 4
PER_CLIENT_RATE = 1.0  # requests per second per client: 50 requests/s in all
P99_TARGET_MS = 250.0
SCALE = Scale("load", batches_per_institution=200, datasets_per_institution=25)
PAGE = """
query Page {
  datasets(first: 20) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes { id accession }
  }
}
"""


@dataclass
class Run:
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)  # by kind: HTTP status, GraphQL code, client exception
    elapsed: float = 0.0

    async def record(self, since: float, send: Callable[[], Awaitable[str | None]]) -> None:
        """Awaits `send` (None for a success, else what went wrong) and counts the answer, timed from `since`."""
        try:
            failure = await send()
        except httpx.HTTPError as exc:
            failure = type(exc).__name__
        if failure is None:
            self.latencies_ms.append((time.perf_counter() - since) * 1000)
        else:
            self.errors[failure] += 1

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.elapsed

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")

    def summary(self, name: str) -> str:
        return (
            f"{name}: p50 {self.percentile(50):.1f} ms, p95 {self.percentile(95):.1f} ms, "
            f"p99 {self.percentile(99):.1f} ms, {self.throughput:.1f} answers/s, {self.errors.total()} errors"
            + (f" ({', '.join(f'{n} {kind}' for kind, n in self.errors.most_common())})" if self.errors else "")
        )


def graphql_failure(response: httpx.Response) -> str | None:
    """Why a GraphQL answer is not a success (its HTTP status, or its first error's code); None when it is one."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    errors = response.json().get("errors")
    return (errors[0].get("extensions") or {}).get("code", "GraphQL error") if errors else None


async def seed(settings: Settings, scale: Scale, idp: DevIdentityProvider) -> None:
    """The consortium at `scale`, the dev issuers trusted, and fresh planner statistics."""
    database = Database(settings)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            async with database.unit_of_work() as session:
                await seed_bulk(session, Consortium(scale, seed=2026), origin=settings.node_id)
            async with database.unit_of_work() as session:
                await register_dev_issuers(session, http, idp)
    finally:
        await database.dispose()
    _analyze(settings)


def _analyze(settings: Settings) -> None:
    # As the owner: the application role may not ANALYZE the tables (PostgreSQL skips them with a warning), and
    # the bench server runs without autovacuum, so a bulk-loaded database would otherwise have no statistics.
    engine = create_engine(settings.owner_url)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
            connection.commit()
    finally:
        engine.dispose()


def _environment(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "CELLCOMMONS_ENVIRONMENT": settings.environment.value,
        "CELLCOMMONS_DATABASE_URL": settings.database_url or "",
        "CELLCOMMONS_S3_ENDPOINT": settings.s3_endpoint or "",
        "CELLCOMMONS_S3_ACCESS_KEY": settings.s3_access_key,
        "CELLCOMMONS_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
        "CELLCOMMONS_S3_REGION": settings.s3_region,
        "CELLCOMMONS_BUCKET_PREFIX": settings.bucket_prefix,
    }


@contextmanager
def served(settings: Settings, workers: int = WORKERS) -> Iterator[str]:
    """`cellcommons serve --workers N` on a free port; yields its base URL, stops it afterwards.

    The server's log (JSON lines on stderr) goes to a file: a pipe that nobody reads fills up after 64 KiB and
    then blocks every worker writing its request log, which would measure the pipe, not the platform."""
    cli = shutil.which("cellcommons") or str(Path(sys.executable).parent / "cellcommons")
    port = free_port()
    command = [cli, "serve", "--port", str(port), "--workers", str(workers)]
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(command, env=_environment(settings), stdout=subprocess.DEVNULL, stderr=log)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_ready(server, base, log)
            yield base
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _wait_ready(server: subprocess.Popen, base: str, log, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"cellcommons serve exited: {log.read()[-2000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("cellcommons serve did not become ready")


async def _open_loop(send, duration: float) -> Run:
    """CLIENTS clients, each sending every 1/PER_CLIENT_RATE s (staggered), for `duration` seconds."""
    run = Run()
    interval = 1 / PER_CLIENT_RATE
    start = time.perf_counter() + 0.2

    async def one(due: float) -> None:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        await run.record(due, send)

    sends = [
        one(start + client * interval / CLIENTS + k * interval)
        for client in range(CLIENTS)
        for k in range(int(duration * PER_CLIENT_RATE))
    ]
    await asyncio.gather(*sends)
    run.elapsed = time.perf_counter() - start
    return run


async def _drive(base: str, token: str, duration: float) -> tuple[Run, Run]:
    limits = httpx.Limits(max_connections=CLIENTS * 2, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as http:
        headers = {"Authorization": f"Bearer {token}"}

        async def page() -> str | None:
            response = await http.post("/graphql", json={"query": PAGE}, headers=headers)
            failure = graphql_failure(response)
            return failure or (None if len(response.json()["data"]["datasets"]["nodes"]) == 20 else "short page")

        async def healthz() -> str | None:
            response = await http.get("/healthz")
            return None if response.status_code == 200 else f"HTTP {response.status_code}"

        await _open_loop(page, 2.0)  # warm every worker's pools and caches; not counted
        baseline = await _open_loop(healthz, duration)
        ours = await _open_loop(page, duration)
    return ours, baseline


def run(stack: ScratchStack, quick: bool, console: Console) -> Report:
    duration = 5.0 if quick else 30.0
    settings = stack.new_database()
    with DevIdentityProvider(None, Settings(_env_file=None, environment=Environment.test)) as idp:
        with console.status("seeding and registering the dev issuers…"):
            asyncio.run(seed(settings, SCALE, idp))
        token = idp.issue_access_token("leiden-scgt", "alice", lifetime=3600)
        with served(settings) as base, console.status(f"{CLIENTS} open-loop clients for {duration:g} s, twice…"):
            ours, baseline = asyncio.run(_drive(base, token, duration))
    p99 = ours.percentile(99)
    verdict = "ok" if p99 <= P99_TARGET_MS and not ours.errors else "MISSED"
    report = Report(
        "load",
        notes=[
            f"{WORKERS} uvicorn workers, {os.cpu_count()} cores; {CLIENTS} clients × {PER_CLIENT_RATE:g} req/s "
            f"for {duration:g} s each; GraphQL page: datasets(first: 20) as leiden-scgt/alice",
            ours.summary("GraphQL 20-dataset page"),
            baseline.summary("GET /healthz (baseline)"),
            f"target: p99 ≤ {P99_TARGET_MS:g} ms and 0 errors on the page — {verdict}",
        ],
    )
    report.measures.append(
        Measure("page answers/s", ours.throughput, baseline.throughput, "req/s", "/healthz, same schedule", 0.95)
    )
    return report
