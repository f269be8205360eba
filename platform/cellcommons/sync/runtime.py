"""Running a source: lock it, read each stream from its bookmark, land page by page, record the run.

Each page commits with its bookmark (and the run's counts) in one transaction; a crash between pages resumes
from the last committed page. Transient errors restart the stream from that bookmark after a backoff; a run
that fails counts towards the source's circuit breaker. Full-snapshot streams delete what a completed pass
did not see, and only then; a pass always begins at the first page (a replay from a bookmark mid-pass reads a
whole new pass), so what it did not see is absent from the source.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import psycopg
from pydantic_core import to_jsonable_python
from sqlalchemy.exc import StatementError

from cellcommons.audit import service as audit
from cellcommons.catalogue.models import Institution
from cellcommons.db import Database
from cellcommons.errors import CellCommonsError, Conflict
from cellcommons.observability import metrics
from cellcommons.outages import unavailable_from
from cellcommons.settings import Settings
from cellcommons.sync import repository
from cellcommons.sync.harvest import HarvestTarget
from cellcommons.sync.models import RunStatus, RunTrigger, SyncRun, SyncSource
from cellcommons.sync.pages import (
    KEY_LENGTH,
    CheckedPage,
    PageOutcome,
    PageWork,
    Rejected,
    check_page_between,
    land_page,
)
from cellcommons.sync.resilience import BreakerPolicy, RetryPolicy
from cellcommons.sync.schedule import next_fire
from cellcommons.sync.sdk import (
    UNREADABLE_TIMESTAMP,
    Connector,
    ConnectorContext,
    Page,
    Record,
    Stream,
    TransientError,
    connector_class,
)
from cellcommons.sync.secrets import redact, unseal
from cellcommons.sync.targets import TARGETS

ACTOR = "system:sync"
MAX_ERROR = 2000
REPLAY_CHUNK = 500
Progress = Callable[[str, int], None]
DEFAULT_RETRY, DEFAULT_BREAKER = RetryPolicy(), BreakerPolicy()
ENTITIES = {**TARGETS, HarvestTarget.name: HarvestTarget()}  # what a stream's records may land as


class AlreadyRunning(Conflict):
    code = "sync_running"


class BreakerOpen(Conflict):
    code = "breaker_open"


@dataclass(frozen=True)
class SourceView:
    """The source's facts for one run, read once (the ORM row does not travel between transactions)."""

    id: uuid.UUID
    name: str
    institution_id: uuid.UUID
    institution_slug: str
    connector: str
    config: dict[str, Any]
    secrets: dict[str, str]


class SyncRuntime:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        breaker: BreakerPolicy = DEFAULT_BREAKER,
        connectors: Mapping[str, type[Connector]] | None = None,  # instead of the entry points (tests)
        progress: Progress | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        stop: asyncio.Event | None = None,  # set on shutdown: the run ends after the page it is landing
    ):
        self.database, self.settings = database, settings
        self.stop = stop
        self.retry, self.breaker = retry, breaker
        self.connectors = connectors or {}
        self.progress = progress or (lambda stream, n: None)
        self.sleep = sleep

    # ---- a run -------------------------------------------------------------------------------------------

    async def run(
        self, name: str, *, trigger: RunTrigger = RunTrigger.manual, from_bookmarks: dict | None = None
    ) -> SyncRun | None:
        """Run the source now; None when a scheduled run finds another scheduler got there first."""
        async with self._source_lock(name):
            return await self._locked_run(name, trigger, from_bookmarks)

    @asynccontextmanager
    async def _source_lock(self, name: str) -> AsyncIterator[None]:
        """One run (or quarantine replay) of a source at a time, across processes: an advisory lock."""
        async with self.database.unit_of_work() as session:
            source_id = (await repository.source_by_name(session, name)).id
        async with self.database.engine.connect() as connection:
            lock = await connection.execution_options(isolation_level="AUTOCOMMIT")
            if not await repository.try_lock(lock, source_id):
                raise AlreadyRunning(f"source {name!r} is being synced by another process", field="source")
            try:
                yield
            finally:
                await repository.unlock(lock, source_id)

    async def _locked_run(self, name: str, trigger: RunTrigger, from_bookmarks: dict | None) -> SyncRun | None:
        now = datetime.now(UTC)
        async with self.database.unit_of_work() as session:
            row = await repository.source_by_name(session, name)
            if trigger is RunTrigger.schedule and not _due(row, now):
                return None  # another scheduler ran it while we waited for the lock
            if row.breaker_open_until and row.breaker_open_until > now:
                raise BreakerOpen(
                    f"source {name!r} failed {row.consecutive_failures} times in a row; "
                    f"its circuit breaker stays open until {row.breaker_open_until:%Y-%m-%d %H:%M:%S %Z}",
                    field="source",
                )
            try:
                secrets, unopened = unseal(self.settings, row.name, row.sealed_secrets), None
            except CellCommonsError as exc:  # a failed run like any other: recorded, rescheduled, counted
                secrets, unopened = {}, exc
            source = await self._view(session, row, secrets)
            await repository.abandon_unfinished_runs(session, row.id, now)  # we hold the lock: nobody runs them
            marks = await repository.bookmarks(session, row.id)
            stored = {s: b.value for s, b in marks.items()}
            start = from_bookmarks if from_bookmarks is not None else stored
            run = SyncRun(source_id=row.id, trigger=trigger, status=RunStatus.running, start_bookmarks=start)
            session.add(run)
            await session.flush()
            # A snapshot pass resumes only where it left off: the pass and the bookmark it saved go together.
            passes = {s: b.snapshot_pass for s, b in marks.items() if start.get(s) == b.value}
        if unopened is not None:
            return await self._finish(run.id, source, RunStatus.failed, _failure(unopened, source))
        status, error = await self._read_streams(run.id, source, start, passes)
        return await self._finish(run.id, source, status, error)

    async def _view(self, session, row: SyncSource, secrets: dict[str, str]) -> SourceView:
        slug = (await session.get(Institution, row.institution_id)).slug
        return SourceView(row.id, row.name, row.institution_id, slug, row.connector, dict(row.config), secrets)

    def connector(self, source: SourceView) -> Connector:
        cls = self.connectors.get(source.connector) or connector_class(source.connector)
        return cls(ConnectorContext(source.name, source.config, source.secrets, self.settings))

    async def _read_streams(
        self, run_id: uuid.UUID, source: SourceView, start: dict, passes: dict
    ) -> tuple[RunStatus, str | None]:
        connector = None
        try:
            connector = self.connector(source)
            for stream in connector.streams():
                await self._stream(run_id, source, stream, start.get(stream.name), passes.get(stream.name))
        except Interrupted as exc:
            return RunStatus.interrupted, exc.message
        except Exception as exc:  # any failure ends the run as failed; committed pages stay, with their bookmark
            return RunStatus.failed, _failure(exc, source)
        finally:
            if connector is not None:
                await connector.close()
        return RunStatus.ok, None

    async def _stream(
        self, run_id: uuid.UUID, source: SourceView, stream: Stream, bookmark: Any, snapshot_pass: uuid.UUID | None
    ) -> None:
        target = _target(stream)
        async with self.database.unit_of_work() as session:
            scope = await target.scope(session, source.institution_id, self._origin(stream))
        if stream.full_snapshot and snapshot_pass is None:
            # A new pass reads from the first page, whatever the bookmark (a replay of a run that began mid-pass):
            # its end deletes what it did not see, so it must have seen everything there is.
            bookmark, snapshot_pass = None, uuid.uuid4()
        work = PageWork(target, scope, source.id, stream.name, snapshot_pass)
        failures = 0
        while True:
            try:
                async with aclosing(_checked_ahead(work, stream.read_pages(bookmark))) as checked_pages:
                    async for page, checked in checked_pages:
                        await self._land(run_id, work, page, checked)
                        bookmark, failures = page.bookmark, 0
                        self.progress(stream.name, len(page.records))
                        if self.stop is not None and self.stop.is_set():
                            raise Interrupted()
                break
            except TransientError as exc:
                failures += 1
                await self._back_off(failures, exc)
        if stream.full_snapshot:
            await self._complete_snapshot(run_id, work)

    def _origin(self, stream: Stream) -> str:
        """The node the stream's records originate from: this one, unless the stream harvests a peer."""
        return stream.origin or self.settings.node_id

    async def _land(self, run_id: uuid.UUID, work: PageWork, page: Page, checked: CheckedPage) -> None:
        async with self.database.unit_of_work() as session:
            outcome = await land_page(session, work, checked)
            await self._keep_rejected(session, run_id, work, outcome.rejected)
            await repository.save_bookmark(session, work.source_id, work.stream, page.bookmark, work.snapshot_pass)
            await _count(session, run_id, outcome)

    async def _keep_rejected(self, session, run_id: uuid.UUID, work: PageWork, rejected: list[Rejected]) -> None:
        await repository.quarantine(session, [_quarantined(run_id, work, r) for r in rejected])
        if work.snapshot_pass is not None:
            # A record present at the source but rejected is not absent: its stored version must survive.
            keys = [r.key for r in rejected if r.key is not None]
            await repository.mark_seen(session, work.source_id, work.stream, keys, work.snapshot_pass)

    async def _complete_snapshot(self, run_id: uuid.UUID, work: PageWork) -> None:
        """The pass read everything: delete what it did not see, in one transaction, then start afresh."""
        async with self.database.unit_of_work() as session:
            outcome = PageOutcome()
            while keys := await repository.absent_keys(session, work.source_id, work.stream, work.snapshot_pass):
                deleted, refused = await work.target.delete(session, work.scope, keys)
                await repository.forget(session, work.source_id, work.stream, [k for k in keys if k not in refused])
                refusals = [_refused_absence(work, key) for key in sorted(refused)]
                await self._keep_rejected(session, run_id, work, refusals)  # marks them seen: the loop ends
                outcome.deleted += len(deleted)
                outcome.rejected += refusals
            await repository.save_bookmark(session, work.source_id, work.stream, None, None)
            await _count(session, run_id, outcome)

    async def _finish(
        self, run_id: uuid.UUID, source: SourceView, status: RunStatus, error: str | None, *, replay: bool = False
    ) -> SyncRun:
        """End the run; a reading run (not a quarantine replay) also moves the source's schedule and breaker."""
        now = datetime.now(UTC)
        async with self.database.unit_of_work() as session:
            run = await session.get(SyncRun, run_id, populate_existing=True)
            row = await session.get(SyncSource, source.id)
            if status is RunStatus.ok and run.quarantined_count:
                status = RunStatus.partial
            run.status, run.error, run.finished_at = status, error, now
            if status is RunStatus.interrupted:
                row.next_run_at = now  # due at once: the next scheduler resumes it from the bookmark
            elif not replay:
                row.consecutive_failures = row.consecutive_failures + 1 if status is RunStatus.failed else 0
                row.breaker_open_until = self.breaker.open_until(row.consecutive_failures, now)
                row.next_run_at = next_fire(row.schedule, now)
            await session.flush()
            await audit.append(
                session,
                actor=ACTOR,
                action="sync.run",
                outcome="failure" if status is RunStatus.failed else "success",
                institution=source.institution_slug,
                target=f"sync_source:{source.name}",
                details={"run": str(run.id), "status": status.value, "trigger": run.trigger.value, **_counts(run)},
            )
        metrics.sync_run(status.value)  # after the commit: a run whose ending was rolled back is not finished
        return run

    # ---- quarantine replay ---------------------------------------------------------------------------------

    async def replay_quarantine(self, name: str) -> SyncRun:
        """Put every open quarantined record of the source through validation again (after a fix at the
        source's specification or the mapping); those that pass land. Recorded as a run (trigger `replay`):
        read = the records replayed, upserted and deleted = those that landed now, quarantined = those still
        held (the run is `partial` while any are)."""
        async with self._source_lock(name):
            async with self.database.unit_of_work() as session:
                row = await repository.source_by_name(session, name)
                source = await self._view(session, row, unseal(self.settings, row.name, row.sealed_secrets))
                run = SyncRun(source_id=row.id, trigger=RunTrigger.replay, status=RunStatus.running, start_bookmarks={})
                session.add(run)
                await session.flush()
            try:
                await self._replay(run.id, source)
            except Exception as exc:  # as for a run: the chunks already landed stay
                return await self._finish(run.id, source, RunStatus.failed, _failure(exc, source), replay=True)
            return await self._finish(run.id, source, RunStatus.ok, None, replay=True)

    async def _replay(self, run_id: uuid.UUID, source: SourceView) -> None:
        connector = self.connector(source)
        try:
            streams = {stream.name: stream for stream in connector.streams()}
        finally:
            await connector.close()  # replay only needs the streams' declarations
        after: uuid.UUID | None = None
        while True:
            after = await self._retrying(partial(self._replay_next, run_id, source, streams, after))
            if after is None:
                return

    async def _replay_next(self, run_id: uuid.UUID, source: SourceView, streams: dict, after: uuid.UUID | None):
        """Replay the next chunk of the quarantine in one transaction; the last id replayed, None when done."""
        async with self.database.unit_of_work() as session:
            chunk = await repository.open_quarantine(session, source.id, after, REPLAY_CHUNK)
            if not chunk:
                return None
            resolved, outcome = await self._replay_chunk(session, source, streams, chunk)
            await repository.resolve(session, resolved)
            held = len(chunk) - len(resolved)
            await repository.add_counts(session, run_id, read=len(chunk), upserted=outcome.upserted,
                                        deleted=outcome.deleted, quarantined=held)  # fmt: skip
            return chunk[-1].id

    async def _retrying(self, attempt: Callable[[], Awaitable[Any]]) -> Any:
        """`attempt()`, tried again after a backoff while it fails transiently (each try its own transaction)."""
        failures = 0
        while True:
            try:
                return await attempt()
            except TransientError as exc:
                failures += 1
                await self._back_off(failures, exc)

    async def _back_off(self, failures: int, error: TransientError) -> None:
        """Wait before the next try after `failures` transient failures in a row; `error` once tries are spent."""
        if failures >= self.retry.attempts:
            raise error
        await self.sleep(self.retry.delay(failures - 1, error.retry_after))

    async def _replay_chunk(
        self, session, source: SourceView, streams: dict, chunk: list
    ) -> tuple[list[uuid.UUID], PageOutcome]:
        resolved, total = [], PageOutcome()
        for stream_name in {q.stream for q in chunk}:
            entries = [q for q in chunk if q.stream == stream_name and stream_name in streams and _replayable(q)]
            if not entries:
                continue
            target = _target(streams[stream_name])
            scope = await target.scope(session, source.institution_id, self._origin(streams[stream_name]))
            work = PageWork(target, scope, source.id, stream_name)
            records = [Record(q.payload, q.source_updated_at, q.deleted) for q in entries]
            outcome = await land_page(session, work, await check_page_between(work, records))
            resolved += [q.id for q in entries if q.record_key is not None and q.record_key in outcome.landed]
            total.upserted, total.deleted = total.upserted + outcome.upserted, total.deleted + outcome.deleted
        return resolved, total


class Interrupted(CellCommonsError):
    """The runtime's process is shutting down; raised only between pages, after one committed."""

    code = "sync_interrupted"

    def __init__(self) -> None:
        super().__init__("stopped by a shutdown after a committed page; the next run resumes from its bookmark")


async def _checked_ahead(work: PageWork, pages: AsyncIterator[Page]) -> AsyncIterator[tuple[Page, CheckedPage]]:
    """Each page with its records validated, the next page read and validated by a task while the caller lands
    this one: landing mostly waits on PostgreSQL, reading waits on the source or is pure Python, and validation is
    pure Python, so they overlap. A page read before the source failed still lands first (the failure surfaces
    when the next page is asked for), so reading ahead loses nothing. Closing this generator stops the reading."""

    async def next_checked() -> tuple[Page, CheckedPage] | None:
        page = await anext(pages, None)
        return None if page is None else (page, await check_page_between(work, page.records))

    ahead = asyncio.ensure_future(next_checked())
    try:
        while (current := await ahead) is not None:
            ahead = asyncio.ensure_future(next_checked())
            yield current
    finally:
        ahead.cancel()
        await asyncio.gather(ahead, return_exceptions=True)
        if isinstance(pages, AsyncGenerator):  # read_pages is usually one; a plain iterator has nothing to close
            await pages.aclose()


def _due(source: SyncSource, now: datetime) -> bool:
    return source.enabled and source.next_run_at is not None and source.next_run_at <= now


def _target(stream: Stream):
    target = ENTITIES.get(stream.target)
    if target is None:
        raise CellCommonsError(f"stream {stream.name!r} targets unknown entity {stream.target!r}", field="target")
    if tuple(stream.natural_key) != target.natural_key:
        message = f"stream {stream.name!r}: {target.name} records are keyed by {', '.join(target.natural_key)}"
        raise CellCommonsError(message, field="natural_key")
    return target


def _quarantined(run_id: uuid.UUID, work: PageWork, rejected: Rejected) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "source_id": work.source_id,
        "run_id": run_id,
        "stream": work.stream,
        "record_key": rejected.key[:KEY_LENGTH] if rejected.key else None,
        "payload": _storable(to_jsonable_python(rejected.record.data, fallback=str)),
        "source_updated_at": rejected.record.updated_at,
        "deleted": rejected.record.deleted,
        "errors": _storable(rejected.errors),
    }


def _storable(value: Any) -> Any:
    """JSON PostgreSQL can store: a NUL character or a lone surrogate in a string (a key too) is written as its
    escape (`\\x00`, `\\ud800`); the record is held for a person to read, and it could not be held at all."""
    if isinstance(value, str):
        return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def _replayable(held) -> bool:
    """A record held for an unreadable source time cannot be ordered against what landed since: only reading it
    again from the source (with a time) lands it, never a replay (without one, it would overwrite newer data)."""
    return not any(error.get("code") == UNREADABLE_TIMESTAMP for error in held.errors)


def _refused_absence(work: PageWork, key: str) -> Rejected:
    message = f"{work.target.name} {key!r} is gone from the source but cannot be deleted (a dataset links it)"
    error = {"code": "delete_refused", "severity": "error", "field": work.target.natural_key[0], "message": message}
    return Rejected(Record({work.target.natural_key[0]: key}, deleted=True), key, [error])


async def _count(session, run_id: uuid.UUID, outcome: PageOutcome) -> None:
    await repository.add_counts(
        session, run_id, read=outcome.read, upserted=outcome.upserted, deleted=outcome.deleted,
        quarantined=len(outcome.rejected),
    )  # fmt: skip


def _database_error(exc: Exception) -> BaseException | None:
    """The driver's error behind `exc` when a database statement failed (SQLAlchemy wraps most of them)."""
    if isinstance(exc, StatementError):
        return exc.orig or exc
    return exc if isinstance(exc, psycopg.Error) else None


def _counts(run: SyncRun) -> dict[str, int]:
    return {
        "read": run.read_count,
        "upserted": run.upserted_count,
        "quarantined": run.quarantined_count,
        "deleted": run.deleted_count,
    }


def _failure(exc: Exception, source: SourceView) -> str:
    """What a failed run records: the domain error's message, else the exception's type and text. An error may
    quote a URL or a request: never let a secret of the source through. A database error quotes its statement
    and the values of the records it wrote: only its kind is kept."""
    refused, down = _database_error(exc), unavailable_from(exc)
    if isinstance(exc, CellCommonsError):
        message = exc.message
    elif down is not None:  # the connection went, not the statement
        message = down.message
    elif refused is not None:
        code = getattr(refused, "sqlstate", None)
        message = f"the database refused a statement of the run: {type(refused).__name__}"
        message += f" (SQLSTATE {code})" if code else ""
    else:
        message = f"{type(exc).__name__}: {exc}"
    return redact(message, source.secrets)[:MAX_ERROR]
