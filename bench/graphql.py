"""GraphQL search at bench scale: a page query (filter + search + nested batches and QC results) and a facet
query, each against hand-written SQL fetching the same data in the same run; then 20 concurrent clients.

The GraphQL side runs through the real schema with the endpoint's protection extensions, context and
DataLoaders on one session per request, timed from the query text to the result (parsing, validation, cost
check, execution, every statement; not HTTP, the token, JSON encoding, or the session's connection checkout,
which is timed apart), in a process whose startup heap is frozen as the app's is; each session ends as the
endpoint ends it (`db.end_request`: a request that only read commits, so psycopg's prepared statements outlive
it, as they do in the server). The page is the shape `graphql/compiled.py` answers with one statement that
builds its JSON. Statements are counted by the engine's cursor events, which statements run on psycopg directly
(`DriverStatement`) report too. The
hand-written SQL runs on the driver with tuples back, in one connection and transaction. The concurrency part
drives `cellcommons serve` with several workers (HTTP, bearer tokens from the dev identity provider,
protection, budget) with 20 clients at once, each sending its next request when the last one is answered.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter

import httpx
from rich.console import Console
from sqlalchemy import event, select

from bench.load import Run, graphql_failure, seed, served
from bench.report import Measure, Report
from cellcommons.auth.dev_idp import DevIdentityProvider
from cellcommons.auth.principal import Principal, Role
from cellcommons.background import settle_heap
from cellcommons.catalogue.models import Institution
from cellcommons.db import Database, driver_connection, end_request
from cellcommons.demo.consortium import SCALES, Scale
from cellcommons.demo.scratch import ScratchStack
from cellcommons.graphql.context import Context
from cellcommons.graphql.ids import Identifiers
from cellcommons.graphql.limits import protection
from cellcommons.graphql.schema import build_schema
from cellcommons.settings import Environment, Settings

QUICK = Scale("quick", batches_per_institution=2_000, datasets_per_institution=400)
CALLER = "maple-ccrm"
WORKERS = 4
SEARCH, TISSUE = "MSC", "UBERON:0002371"  # what PAGE and FACETS ask for

PAGE = """
query($first: Int!, $batches: Int!) {
  datasets(first: $first, search: "MSC", filter: {tissue: {eq: "UBERON:0002371"}}) {
    nodes { accession latestVersion { title batches(first: $batches) { nodes {
      lotNumber releaseStatus qcResults { testType analyte value unit passed } } } } }
  }
}
"""
FACETS = """
query { batches(first: 1, filter: {releaseStatus: {eq: released}, tissue: {eq: "UBERON:0002371"}}) {
  facets { tissue { value count } releaseStatus { value count } institution { value count } }
} }
"""

# What a careful hand would write for the same answers, the same policy included (a member of another institution
# sees published, not non_public versions and batches not linked only to non_public ones), and the same search:
# the text matches a version's document or its dataset's (accession, DOI), as the API's search does.
SQL_DATASETS = """
SELECT d.id, d.accession, v.id, v.title FROM dataset d JOIN dataset_version v ON v.dataset_id = d.id
WHERE (v.status = 'published' AND v.access_rights <> 'non_public' OR d.institution_id = %(me)s)
  AND NOT EXISTS (SELECT 1 FROM dataset_version n WHERE n.dataset_id = d.id AND n.version > v.version
                  AND (n.status = 'published' AND n.access_rights <> 'non_public' OR d.institution_id = %(me)s))
  AND v.tissue = %(tissue)s
  AND (v.search_document @@ (websearch_to_tsquery('english', %(q)s) || websearch_to_tsquery('simple', %(q)s))
       OR d.search_document @@ (websearch_to_tsquery('english', %(q)s) || websearch_to_tsquery('simple', %(q)s)))
ORDER BY d.created_at, d.id LIMIT %(first)s
"""
SQL_BATCHES = """
SELECT l.dataset_version_id, b.id, b.lot_number, b.release_status FROM dataset_version_batch l
JOIN batch b ON b.id = l.batch_id
WHERE l.dataset_version_id = ANY(%(versions)s) AND (b.institution_id = %(me)s
  OR NOT EXISTS (SELECT 1 FROM dataset_version_batch x WHERE x.batch_id = b.id)
  OR EXISTS (SELECT 1 FROM dataset_version_batch x JOIN dataset_version xv ON xv.id = x.dataset_version_id
             WHERE x.batch_id = b.id AND xv.access_rights <> 'non_public'))
ORDER BY l.dataset_version_id, b.created_at, b.id
"""
SQL_QC = """
SELECT batch_id, test_type, analyte, value, unit, passed FROM qc_result WHERE batch_id = ANY(%(batches)s)
ORDER BY batch_id, position
"""
SQL_FACET = """
WITH found AS (
  SELECT b.id, b.tissue, b.release_status, b.institution_id FROM batch b
  WHERE (b.institution_id = %(me)s OR NOT EXISTS (SELECT 1 FROM dataset_version_batch x WHERE x.batch_id = b.id)
         OR EXISTS (SELECT 1 FROM dataset_version_batch x JOIN dataset_version xv ON xv.id = x.dataset_version_id
                    WHERE x.batch_id = b.id AND xv.access_rights <> 'non_public')))
SELECT 'tissue', tissue::text, count(*) FROM found WHERE release_status = 'released' GROUP BY tissue
UNION ALL SELECT 'status', release_status::text, count(*) FROM found WHERE tissue = %(tissue)s GROUP BY release_status
UNION ALL SELECT 'institution', i.slug, count(*) FROM found JOIN institution i ON i.id = found.institution_id
  WHERE release_status = 'released' AND tissue = %(tissue)s GROUP BY i.slug
"""


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.95) - 1]


class Bench:
    def __init__(self, settings: Settings, rounds: int):
        self.settings = settings
        self.rounds = rounds
        self.database = Database(settings)
        self.schema = build_schema(protection(settings))  # as the endpoint serves it
        self.ids = Identifiers(settings.secret_key.get_secret_value())
        self.statements = Counter()
        event.listen(self.database.engine.sync_engine, "before_cursor_execute", self._count)
        settle_heap()  # as the app's lifespan does once it has started

    def _count(self, *args) -> None:
        self.statements["all"] += 1

    async def principal(self) -> Principal:
        async with self.database.sessions() as session:
            institution = await session.scalar(select(Institution).where(Institution.slug == CALLER))
        return Principal(institution.id, institution.slug, "bench", frozenset({Role.reader}))

    async def graphql(self, principal, query: str, variables: dict) -> tuple[list[float], int, list[float]]:
        """Latencies, statements per request, and the session's connection checkout (pool pre-ping and BEGIN),
        timed apart: the hand-written SQL's loop holds one connection and transaction throughout."""
        samples, checkouts = [], []
        for _ in range(self.rounds + 2):
            before = self.statements["all"]
            session = self.database.sessions()
            try:
                start = time.perf_counter()
                await session.connection()
                checkouts.append((time.perf_counter() - start) * 1000)
                context = Context(principal=principal, session=session, settings=self.settings, ids=self.ids)
                start = time.perf_counter()
                result = await self.schema.execute(query, variable_values=variables, context_value=context)
                samples.append((time.perf_counter() - start) * 1000)
            finally:
                await end_request(session)  # as the endpoint ends it: prepared statements outlive the request
            assert not result.errors, result.errors
            statements = self.statements["all"] - before
        return samples[2:], statements, checkouts[2:]

    async def sql_page(self, principal, first: int) -> list[float]:
        async def once(connection):
            params = {"me": principal.institution_id, "tissue": TISSUE, "q": SEARCH, "first": first}
            datasets = await (await connection.execute(SQL_DATASETS, params)).fetchall()
            versions = [row[2] for row in datasets]
            links = await (await connection.execute(SQL_BATCHES, {**params, "versions": versions})).fetchall()
            batches = [row[1] for row in links]  # every link: the page's 5-per-version cut is taken in Python
            await (await connection.execute(SQL_QC, {"batches": batches})).fetchall()

        return await self._timed(once)

    async def sql_facets(self, principal) -> list[float]:
        async def once(connection):
            params = {"me": principal.institution_id, "tissue": TISSUE}
            await (await connection.execute(SQL_FACET, params)).fetchall()

        return await self._timed(once)

    async def _timed(self, once) -> list[float]:
        samples = []
        async with self.database.sessions() as session:
            connection = await driver_connection(session)
            for _ in range(self.rounds + 2):
                start = time.perf_counter()
                await once(connection)
                samples.append((time.perf_counter() - start) * 1000)
        return samples[2:]


async def _concurrent(base: str, token: str, clients: int, requests: int) -> Run:
    """`clients` clients each asking for the 20-dataset page `requests` times, one request at a time."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {token}"}
    body = {"query": PAGE, "variables": {"first": 20, "batches": 5}}
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:

        async def page() -> str | None:
            return graphql_failure(await http.post("/graphql", json=body, headers=headers))

        async def client(run: Run, count: int) -> None:
            for _ in range(count):
                await run.record(time.perf_counter(), page)

        await asyncio.gather(*(client(Run(), 1) for _ in range(clients)))  # warm every worker; not counted
        run = Run()
        start = time.perf_counter()
        await asyncio.gather(*(client(run, requests) for _ in range(clients)))
        run.elapsed = time.perf_counter() - start
        return run


async def _run(stack: ScratchStack, quick: bool, console: Console) -> Report:
    scale = QUICK if quick else SCALES["bench"]
    settings = stack.new_database()
    report = Report("graphql")
    with DevIdentityProvider(None, Settings(_env_file=None, environment=Environment.test)) as idp:
        with console.status(f"seeding the {scale.name} scale…"):
            await seed(settings, scale, idp)
        bench = Bench(settings, rounds=5 if quick else 30)
        principal = await bench.principal()
        for first, nested in ((20, 5), (100, 10)):
            ours, statements, checkouts = await bench.graphql(principal, PAGE, {"first": first, "batches": nested})
            sql = await bench.sql_page(principal, first)
            (p50, p95), (s50, s95) = _percentiles(ours), _percentiles(sql)
            # Measures are rates (higher is better): pages per second from the median latency.
            report.measures.append(Measure(f"page {first}×{nested} (p50)", 1000 / p50, 1000 / s50, "pages/s",
                                           "hand-written SQL", target=0.5))  # fmt: skip
            report.notes.append(
                f"page {first} datasets × {nested} batches × their QC results: p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
                f"{statements} statements; hand-written SQL p50 {s50:.1f} ms, p95 {s95:.1f} ms (3 statements); "
                f"outside both: the request's connection checkout (pre-ping, BEGIN) p50 "
                f"{statistics.median(checkouts):.1f} ms"
            )
        ours, statements, _ = await bench.graphql(principal, FACETS, {})
        sql = await bench.sql_facets(principal)
        (p50, p95), (s50, s95) = _percentiles(ours), _percentiles(sql)
        report.measures.append(Measure("facets (p50)", 1000 / p50, 1000 / s50, "queries/s", "hand-written SQL", 0.5))
        report.notes.append(
            f"facets (tissue, release status, institution of released BM batches): p50 {p50:.1f} ms, "
            f"p95 {p95:.1f} ms, {statements} statements; hand-written SQL p50 {s50:.1f} ms, p95 {s95:.1f} ms"
        )
        await bench.database.dispose()
        token = idp.issue_access_token(CALLER, "stella", lifetime=3600)
        with served(settings, WORKERS) as base, console.status("20 concurrent clients…"):
            run = await _concurrent(base, token, clients=20, requests=3 if quick else 20)
        report.notes.append(run.summary(f"20 concurrent clients, 20×5 page, `cellcommons serve --workers {WORKERS}`"))
        report.notes.append(
            f"scale {scale.name}: {4 * scale.batches_per_institution:,} batches, "
            f"{4 * scale.datasets_per_institution:,} datasets; caller: a reader of {CALLER}"
        )
    stack.drop(settings)
    return report


def run(stack: ScratchStack, quick: bool, console: Console) -> Report:
    return asyncio.run(_run(stack, quick, console))
