"""/metrics, request ids and the access log through the in-process API (tests/graphql/conftest.py)."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from sqlalchemy import select
from tests.api.test_drs import CONTENT, DRS, LEIDEN
from tests.graphql.conftest import api, seeded_settings  # noqa: F401  (the seeded in-process API)
from tests.storage.files import published_file
from tests.sync.conftest import SLUG, SyncEnv, batch_record, memory_connector

from cellcommons.catalogue.models import Institution
from cellcommons.db import Database
from cellcommons.graphql.ids import Identifiers
from cellcommons.observability.logs import JsonFormatter
from cellcommons.storage import ObjectStore
from cellcommons.sync.models import RunStatus


@pytest.fixture(scope="module")
async def shared_file(api):  # noqa: F811
    database = Database(api.settings)
    try:
        found = await published_file(
            database, ObjectStore.from_settings(api.settings), api.settings, LEIDEN, "restricted", CONTENT
        )
    finally:
        await database.dispose()
    return Identifiers(api.settings.secret_key.get_secret_value()).global_id("Distribution", found.distribution_id)


@pytest.fixture
def log_output():
    """Everything logged anywhere in the process while the test runs, as the JSON lines production writes."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def access_lines(buffer: io.StringIO) -> list[dict]:
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    return [line for line in lines if line["logger"] == "cellcommons.access"]


async def exposition(api) -> str:  # noqa: F811
    response = await api.client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return response.text


def value(text: str, name: str, **labels: str) -> float:
    """The sample's value in the text exposition, 0 if absent."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, number = line.rsplit(" ", 1)
            if dict(re.findall(r'(\w+)="([^"]*)"', series)) == labels:
                return float(number)
    return 0.0


async def test_a_bad_token_is_counted_by_reason(api):  # noqa: F811
    before = value(await exposition(api), "cellcommons_token_rejections_total", reason="malformed token")
    response = await api.client.get("/whoami", headers={"Authorization": "Bearer not-a-jwt"})
    assert response.status_code == 401
    after = value(await exposition(api), "cellcommons_token_rejections_total", reason="malformed token")
    assert after == before + 1


async def test_graphql_latency_is_labelled_by_operation_name_and_cost_is_observed(api):  # noqa: F811
    labels = {"method": "POST", "operation": "ObservedInstitutions", "status": "200"}
    before = await exposition(api)
    body = await api.query("query ObservedInstitutions { __typename }")
    assert "errors" not in body
    after = await exposition(api)
    count = "cellcommons_request_duration_seconds_count"
    assert value(after, count, **labels) == value(before, count, **labels) + 1
    cost = "cellcommons_graphql_cost_points_count"
    assert value(after, cost) == value(before, cost) + 1


async def test_routes_are_labelled_by_template_never_by_raw_path(api, shared_file):  # noqa: F811
    await api.client.get(f"{DRS}/objects/{shared_file}", headers=api.token(LEIDEN, "stella"))
    text = await exposition(api)
    template = {"method": "GET", "operation": f"{DRS}/objects/{{object_id}}", "status": "200"}
    assert value(text, "cellcommons_request_duration_seconds_count", **template) >= 1
    assert shared_file not in text


async def test_a_plain_request_id_is_echoed_and_an_unsafe_one_replaced(api):  # noqa: F811
    kept = await api.client.get("/healthz", headers={"X-Request-ID": "trace-42"})
    assert kept.headers["x-request-id"] == "trace-42"
    replaced = await api.client.get("/healthz", headers={"X-Request-ID": "x" * 300})
    assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])


async def test_the_access_line_names_the_institution_and_never_the_token(api, log_output):  # noqa: F811
    headers = api.token(LEIDEN, "stella")
    token = headers["Authorization"].removeprefix("Bearer ")
    response = await api.client.get("/whoami", headers={**headers, "Cookie": "cc_session=cookie-secret-1"})
    assert response.json()["institution"] == LEIDEN
    (line,) = [line for line in access_lines(log_output) if line["path"] == "/whoami"]
    assert line["institution"] == LEIDEN and line["status"] == 200 and line["method"] == "GET"
    assert line["request_id"] == response.headers["x-request-id"] and line["duration_ms"] >= 0
    everything = log_output.getvalue()
    for secret in (token, token.split(".")[2], "cookie-secret-1", "Authorization", "authorization"):
        assert secret not in everything


async def test_issuing_a_download_url_counts_it_and_logs_neither_url_nor_signature(api, shared_file, log_output):  # noqa: F811
    before = value(await exposition(api), "cellcommons_download_urls_issued_total")
    headers = api.token(LEIDEN, "stella")
    response = await api.client.get(f"{DRS}/objects/{shared_file}/access/presigned", headers=headers)
    assert response.status_code == 200
    url = response.json()["url"]
    signature = re.search(r"X-Amz-Signature=([0-9a-f]+)", url).group(1)
    assert value(await exposition(api), "cellcommons_download_urls_issued_total") == before + 1
    everything = log_output.getvalue()
    assert access_lines(log_output), "the request was logged"
    for secret in (url, url.split("?", 1)[1], signature, headers["Authorization"].removeprefix("Bearer ")):
        assert secret not in everything
    assert any(line["path"] == f"{DRS}/objects/{{object_id}}/access/{{access_id}}" for line in access_lines(log_output))


async def test_a_finished_sync_run_is_counted_by_status_in_the_app_running_it(api):  # noqa: F811
    """The runtime counts into whichever app's metrics are active (the API's, for runs it starts)."""
    database = Database(api.settings)
    try:
        async with database.unit_of_work() as session:
            institution_id = await session.scalar(select(Institution.id).where(Institution.slug == SLUG))
        env = SyncEnv(api.settings, database, institution_id)
        await env.add_source("observed-lims")
        before = value(await exposition(api), "cellcommons_sync_runs_total", status="partial")
        with api.client._transport.app.state.metrics.activated():
            run = await env.runtime(memory_connector([batch_record("OBS-1"), batch_record("OBS-2", passage=-1)])).run(
                "observed-lims"
            )
    finally:
        await database.dispose()
    assert run.status is RunStatus.partial
    assert value(await exposition(api), "cellcommons_sync_runs_total", status="partial") == before + 1


async def test_an_unnamed_graphql_operation_is_labelled_by_the_endpoints_path(api):  # noqa: F811
    labels = {"method": "POST", "operation": "/graphql", "status": "200"}
    count = "cellcommons_request_duration_seconds_count"
    before = value(await exposition(api), count, **labels)
    assert "errors" not in await api.query("{ __typename }")
    assert value(await exposition(api), count, **labels) == before + 1


async def test_invented_http_methods_share_one_label(api):  # noqa: F811
    for method in ("INVENTED1", "INVENTED2"):
        await api.client.request(method, "/healthz")
    text = await exposition(api)
    assert "INVENTED" not in text
    labels = {"method": "other", "operation": "unmatched", "status": "404"}
    assert value(text, "cellcommons_request_duration_seconds_count", **labels) >= 2
