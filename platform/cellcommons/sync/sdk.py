"""The connector SDK: what a connector declares and what it hands the runtime.

A connector declares streams. Each stream names its target entity (the catalogue table its records land in),
its natural key (which must be the target's key: upserts are `INSERT … ON CONFLICT` on it), its replication
key (the raw field holding the source's last-modified time), the pydantic schema its records must satisfy,
and whether it is a full snapshot (absence means deletion). It reads pages from a bookmark: `read_pages`
yields pages, each carrying the bookmark that resumes right after it. A page is the unit of commit: its
records and its bookmark land in one transaction, so a crash loses nothing and repeats nothing.

`read_pages` is an iterator rather than a single `read_page(bookmark)` call so a source can keep a file or a
cursor open between pages (re-opening a 200 000-row file per page would make reading quadratic); the runtime
only ever restarts it from the last committed bookmark (after a transient error, or in the next run).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel

from cellcommons.errors import InvalidInput, NotFound
from cellcommons.settings import Settings

ENTRY_POINT_GROUP = "cellcommons.connectors"
Bookmark = dict[str, Any] | None


class TransientError(Exception):
    """A failure worth retrying (HTTP 429 and 5xx, timeouts, a dropped connection)."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class SourceError(Exception):
    """A failure retrying will not fix (bad credentials, a missing endpoint, an unreadable file)."""


UNREADABLE_TIMESTAMP = "unreadable_timestamp"  # a finding's code: the record's source time could not be read


@dataclass(frozen=True)
class Record:
    """One raw record as the source gave it; `deleted` makes it a tombstone (only its key fields matter).
    `findings`: problems met while reading it (an unreadable timestamp); the record is quarantined with them."""

    data: dict[str, Any]
    updated_at: datetime | None = None
    deleted: bool = False
    findings: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Page:
    records: list[Record]
    bookmark: Bookmark  # resumes right after this page


class Stream:
    """Subclass and set the class attributes; implement `read_pages`.

    The runtime reads one page ahead of the page it lands, as a task, and cancels that read when a run ends
    early: release what a read holds in `finally` (a blocking generator driven by `pages_in_thread` is closed
    for you)."""

    name: ClassVar[str]
    target: ClassVar[str]  # an entity of sync.runtime.ENTITIES: "batch", "node_record"
    natural_key: ClassVar[tuple[str, ...]]
    schema: ClassVar[type[BaseModel]]
    replication_key: ClassVar[str | None] = None
    full_snapshot: ClassVar[bool] = False
    origin: str | None = None  # the node its records originate from; None: this node (a peer's, for harvests)

    def read_pages(self, bookmark: Bookmark) -> AsyncIterator[Page]:
        raise NotImplementedError

    def record(self, raw: dict[str, Any], *, deleted: bool = False) -> Record:
        """A Record from a raw row, its replication key lifted out as the source timestamp."""
        data = dict(raw)
        stamp = data.pop(self.replication_key, None) if self.replication_key else None
        updated_at, findings = read_timestamp(stamp, self.replication_key)
        return Record(data=data, updated_at=updated_at, deleted=deleted, findings=findings)


def parse_timestamp(value: object, field_name: str | None) -> datetime | None:
    if value is None or value == "" or isinstance(value, datetime):
        return value or None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput(f"{value!r} is not an ISO 8601 timestamp", field=field_name) from None


def read_timestamp(value: object, field_name: str | None) -> tuple[datetime | None, tuple[dict[str, Any], ...]]:
    """A record's source time; an unreadable one is no time and a finding (its record is quarantined, the rest of
    the page lands), not a failed run."""
    try:
        return parse_timestamp(value, field_name), ()
    except InvalidInput as exc:
        finding = {"code": UNREADABLE_TIMESTAMP, "severity": "error", "field": field_name or "", "message": exc.message}
        return None, (finding,)


@dataclass
class ConnectorContext:
    """What the platform gives a connector: its source's configuration, its unsealed secrets, the settings."""

    source: str
    config: dict[str, Any]
    secrets: dict[str, str] = field(repr=False)
    settings: Settings = field(repr=False)


class Connector:
    """A connector class is built once per run from its source's configuration."""

    # Configuration keys the source must set, checked when the source is added.
    required_config: ClassVar[tuple[str, ...]] = ()

    def __init__(self, context: ConnectorContext):
        self.context = context

    def streams(self) -> list[Stream]:
        raise NotImplementedError

    async def close(self) -> None:
        return None


def count_setting(config: dict[str, Any], name: str, default: int, *, most: int | None = None) -> int:
    """A whole-number setting of a source (a page size), at least 1 and at most `most`; InvalidInput naming the
    setting otherwise (a page size of 0 would make a reading loop step by nothing)."""
    value = config.get(name, default)
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1 or (most is not None and number > most):
        bounds = f"from 1 to {most}" if most is not None else "of at least 1"
        raise InvalidInput(f"{name} must be a whole number {bounds}, not {value!r}", field=name)
    return number


def connector_class(name: str) -> type[Connector]:
    """The connector registered under `name` in the `cellcommons.connectors` entry-point group."""
    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        known = ", ".join(sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))) or "none"
        raise NotFound(f"no connector {name!r} (installed: {known})", field="connector")
    return next(iter(found)).load()


async def pages_in_thread(pages: Iterator[Page]) -> AsyncIterator[Page]:
    """Drive a blocking page generator (file parsing, a synchronous SDK) without blocking the event loop.

    The runtime reads a page ahead and cancels that read when the run ends early; a thread cannot be stopped, so
    the read in flight is left to finish (shielded), and then the generator is closed in a thread, releasing its
    files and connections before the connector closes."""
    done, reading = object(), None
    try:
        while True:
            reading = asyncio.ensure_future(asyncio.to_thread(next, pages, done))
            page = await asyncio.shield(reading)
            if page is done:
                return
            yield page
    finally:
        if reading is not None:
            await asyncio.gather(reading, return_exceptions=True)
        if isinstance(pages, Generator):
            await asyncio.to_thread(pages.close)


async def send(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Send a request; a network failure, 429 or 5xx is a TransientError (with the server's Retry-After)."""
    try:
        response = await http.request(method, url, **kwargs)
    except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        raise TransientError(f"{url}: {type(exc).__name__}") from None
    if response.status_code == 429 or response.status_code >= 500:
        raise TransientError(f"{url}: HTTP {response.status_code}", retry_after=_retry_after(response))
    return response


def decoded(response: httpx.Response) -> Any:
    """The JSON body of a successful answer; any other answer, or a body that is not JSON, is a SourceError
    quoting the source's own error message when it gave one (`{"error": ...}`, as REDCap and OAuth do)."""
    url = response.request.url.copy_with(query=None)  # never quote a query string: it may carry a token
    if response.status_code >= 400:
        raise SourceError(f"{url}: HTTP {response.status_code}{_error_text(response)}")
    try:
        return response.json()
    except ValueError:
        raise SourceError(f"{url}: the answer is not JSON") from None


async def get_json(http: httpx.AsyncClient, url: str, **kwargs: Any) -> Any:
    """GET and decode JSON, sorting failures into transient (retry) and permanent (stop) ones."""
    return decoded(await send(http, "GET", url, **kwargs))


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    message = body.get("error_description") or body.get("detail") or body.get("error")
    return f": {str(message)[:300]}" if message else ""


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None
