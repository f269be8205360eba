"""Prometheus metrics: one `Metrics` (with its own CollectorRegistry) per app, reached by the code that counts
events through a context variable the request middleware sets.

Why a context variable rather than the default global registry: two apps in one process (tests, workers) must
not share or double-register series, and the counting sites (authenticator, downloads, sync runtime, GraphQL
cost guard) should not need a metrics object threaded through every signature. Outside a request (CLI,
scheduler) nothing is active and the calls do nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)

from cellcommons.errors import InvalidInput
from cellcommons.observability.logs import current_request

__all__ = [
    "CONTENT_TYPE_LATEST",
    "Metrics",
    "active",
    "export_finished",
    "exposed",
    "graphql_cost",
    "sync_run",
    "token_rejected",
    "url_issued",
]

_active: ContextVar[Metrics | None] = ContextVar("cellcommons_metrics", default=None)

# Client-chosen strings become label values only in this shape and only up to this many distinct values: every
# label value is a time series kept in memory forever, so a caller inventing names must not grow it unboundedly.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_OPERATION_NAMES = 200
OTHER = "other"

# The request's method is the client's too (h11 accepts any token as a method): others are labelled `other`.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Token rejection messages are fixed strings in auth/validator.py, except one that names a JOSE header taken from
# the token itself; that one is folded so an attacker cannot mint label values.
_REASON_PREFIXES = {"header ": "header not accepted"}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "cellcommons_request_duration_seconds",
            "HTTP request latency by operation (GraphQL operation name, else the route's path template)",
            ["method", "operation", "status"],
            registry=self.registry,
        )
        self.graphql_cost = Histogram(
            "cellcommons_graphql_cost_points",
            "Priced cost of GraphQL operations that passed validation (admitted or refused), in budget points",
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
            registry=self.registry,
        )
        self.urls_issued = Counter(
            "cellcommons_download_urls_issued",
            "Presigned download URLs signed (a manifest signs one per file)",
            registry=self.registry,
        )
        self.token_rejections = Counter(
            "cellcommons_token_rejections", "Bearer tokens refused, by reason", ["reason"], registry=self.registry
        )
        self.sync_runs = Counter(
            "cellcommons_sync_runs", "Finished sync runs by status", ["status"], registry=self.registry
        )
        self.exports = Counter(
            "cellcommons_exports", "Finished Parquet export jobs by status", ["status"], registry=self.registry
        )
        self.export_rows = Counter(
            "cellcommons_export_rows", "Rows written by succeeded export jobs", registry=self.registry
        )
        self.export_bytes = Counter(
            "cellcommons_export_bytes", "Parquet bytes written by succeeded export jobs", registry=self.registry
        )
        self._operations: set[str] = set()

    def operation_label(self, name: str | None) -> str | None:
        """A safe label for a client-supplied GraphQL operation name; None when there is none to use."""
        if not name:
            return None
        if not _NAME.fullmatch(name):
            return OTHER
        if name not in self._operations:
            if len(self._operations) >= MAX_OPERATION_NAMES:
                return OTHER
            self._operations.add(name)
        return name

    @staticmethod
    def method_label(method: str) -> str:
        return method if method in METHODS else OTHER

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    @contextmanager
    def activated(self) -> Iterator[None]:
        token = _active.set(self)
        try:
            yield
        finally:
            _active.reset(token)


def active() -> Metrics | None:
    return _active.get()


def token_rejected(reason: str) -> None:
    if (metrics := _active.get()) is not None:
        for prefix, folded in _REASON_PREFIXES.items():
            if reason.startswith(prefix):
                reason = folded
        metrics.token_rejections.labels(reason=reason[:64]).inc()


def url_issued() -> None:
    if (metrics := _active.get()) is not None:
        metrics.urls_issued.inc()


def sync_run(status: str) -> None:
    if (metrics := _active.get()) is not None:
        metrics.sync_runs.labels(status=status).inc()


def export_finished(status: str, rows: int, size_bytes: int) -> None:
    if (metrics := _active.get()) is not None:
        metrics.exports.labels(status=status).inc()
        if status == "succeeded":
            metrics.export_rows.inc(rows)
            metrics.export_bytes.inc(size_bytes)


@contextmanager
def exposed(metrics: Metrics, port: int | None, host: str = "127.0.0.1") -> Iterator[None]:
    """For the processes without an HTTP API (scheduler, export worker): count into `metrics` for the block and,
    given a port, serve them at GET /metrics on it meanwhile."""
    with metrics.activated():
        if port is None:
            yield
            return
        try:
            server, thread = start_http_server(port, addr=host, registry=metrics.registry)
        except OSError as exc:  # in use, or an address this machine does not have
            raise InvalidInput(f"cannot serve metrics on {host}:{port}: {exc.strerror}", field="metrics_port") from None
        try:
            yield
        finally:
            server.shutdown()
            thread.join(5)


def graphql_cost(operation_name: str | None, cost: int) -> None:
    """Observe the cost and name the request's operation for the latency histogram and the access log."""
    if (metrics := _active.get()) is not None:
        metrics.graphql_cost.observe(cost)
        if (request := current_request()) is not None:
            request.operation = metrics.operation_label(operation_name)
