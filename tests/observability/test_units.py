"""Metrics and log formatting without a server: label hygiene, independence of registries, scrubbing."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from cellcommons.demo.stack import free_port
from cellcommons.errors import InvalidInput
from cellcommons.observability import logs, metrics
from cellcommons.observability.metrics import MAX_OPERATION_NAMES, Metrics


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_counting_does_nothing_outside_a_request_and_counts_only_into_the_active_registry():
    first, second = Metrics(), Metrics()
    metrics.token_rejected("token expired")  # no active app: must not raise, must not count anywhere
    with first.activated():
        metrics.token_rejected("token expired")
        metrics.sync_run("failed")
        metrics.url_issued()
    assert sample(first, "cellcommons_token_rejections_total", reason="token expired") == 1
    assert sample(first, "cellcommons_sync_runs_total", status="failed") == 1
    assert sample(first, "cellcommons_download_urls_issued_total") == 1
    assert sample(second, "cellcommons_token_rejections_total", reason="token expired") is None


def test_a_reason_naming_an_attacker_chosen_header_is_folded_into_one_label():
    m = Metrics()
    with m.activated():
        metrics.token_rejected("header x5u is not accepted")
        metrics.token_rejected("header jku is not accepted")
    assert sample(m, "cellcommons_token_rejections_total", reason="header not accepted") == 2


def test_operation_names_are_plain_and_bounded():
    m = Metrics()
    assert m.operation_label("DatasetPage") == "DatasetPage"
    assert m.operation_label(None) is None
    assert m.operation_label("x" * 65) == "other"
    assert m.operation_label("drop table; --") == "other"
    for i in range(MAX_OPERATION_NAMES + 5):
        m.operation_label(f"Op{i}")
    assert m.operation_label("OneTooMany") == "other"
    assert m.operation_label("Op0") == "Op0"  # names seen before the cap keep their label


def test_request_ids_are_accepted_only_when_short_and_plain():
    assert logs.request_id("abc-123.X:y_z") == "abc-123.X:y_z"
    for bad in (None, "", "a b", "x" * 129, "id\r\nSet-Cookie: a=b"):
        generated = logs.request_id(bad)
        assert generated != bad and len(generated) == 32


def test_the_formatter_scrubs_tokens_and_signed_urls_from_any_message():
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    url = "https://s3.example/inst-x/key.csv?X-Amz-Algorithm=AWS4&X-Amz-Credential=AK%2F&X-Amz-Signature=deadbeef"
    message = "got %s and Bearer opaque-tok3n for %s"
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, message, (jwt, url), None)
    line = json.loads(logs.JsonFormatter().format(record))
    for secret in (jwt, "opaque-tok3n", "deadbeef", "X-Amz-Credential", "AK%2F"):
        assert secret not in line["message"]
    assert "https://s3.example/inst-x/key.csv?[redacted]" in line["message"]
    assert line["level"] == "warning"


def test_export_jobs_count_by_status_and_only_succeeded_ones_add_rows_and_bytes():
    m = Metrics()
    with m.activated():
        metrics.export_finished("succeeded", rows=1200, size_bytes=40_000)
        metrics.export_finished("failed", rows=300, size_bytes=0)
    assert sample(m, "cellcommons_exports_total", status="succeeded") == 1
    assert sample(m, "cellcommons_exports_total", status="failed") == 1
    assert sample(m, "cellcommons_export_rows_total") == 1200
    assert sample(m, "cellcommons_export_bytes_total") == 40_000


def test_a_process_without_an_api_serves_its_metrics_on_a_port_while_it_runs():
    m = Metrics()
    port = free_port()
    with metrics.exposed(m, port):
        metrics.sync_run("succeeded")
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'cellcommons_sync_runs_total{status="succeeded"} 1.0' in scraped
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics")
    metrics.sync_run("succeeded")  # outside the block nothing is active any more
    assert sample(m, "cellcommons_sync_runs_total", status="succeeded") == 1


def test_a_metrics_port_in_use_is_refused_naming_it():
    port = free_port()
    with metrics.exposed(Metrics(), port), pytest.raises(InvalidInput, match=f"127.0.0.1:{port}") as caught:
        with metrics.exposed(Metrics(), port):
            pass
    assert caught.value.field == "metrics_port"
