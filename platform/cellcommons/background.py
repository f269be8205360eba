"""The polling loops (the export worker, the sync scheduler and its hourly duties): stopped by a signal when they
are a process of their own, or run on a thread of their own with their own event loop and database engine by
`cellcommons demo`, which runs them beside the API in one process."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from cellcommons.db import Database
from cellcommons.errors import CellCommonsError
from cellcommons.settings import Settings

log = logging.getLogger(__name__)

# What a loop runs: given its database and the event that asks it to stop, serve until that is set.
Serve = Callable[[Database, asyncio.Event], Awaitable[None]]


def settle_heap() -> None:
    """Exempt what the process has built so far (modules, mappers, schemas, compiled statements) from the cyclic
    garbage collector, and let it wait for 10 000 net new objects instead of 700 before a young collection. While a
    sync lands thousands of short-lived records (freed by reference counting, few cycles), the collector otherwise
    walked the whole start-up heap again and again and the records in flight at every turn: a sixth of the
    runtime's CPU in `python -m bench sync`. Call when a long-running command or the app has started; only the
    first call in a process does anything (the tests and the demo start several apps in one process)."""
    if gc.get_freeze_count():
        return
    gc.collect()  # what starting left behind is garbage, not heap to keep
    gc.freeze()
    gc.set_threshold(10_000, *gc.get_threshold()[1:])


async def periodically(work: Callable[[], Awaitable[str]], every: timedelta, stop: asyncio.Event, what: str) -> None:
    """Run `work` now and then every `every` until `stop` is set, logging the line it returns. A failed round (the
    database or object storage away) is logged and tried again at the next: the duty outlives an outage."""
    while not stop.is_set():
        try:
            log.info("%s: %s", what, await work())
        except (CellCommonsError, SQLAlchemyError, OSError):
            log.exception("%s failed; trying again in %s", what, every)
        try:
            await asyncio.wait_for(stop.wait(), timeout=every.total_seconds())
        except TimeoutError:
            pass


def stop_on_signals(stop: asyncio.Event | None = None) -> asyncio.Event:
    """`stop` (or a new event) set by SIGINT or SIGTERM; call it inside the running event loop."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


class BackgroundLoop:
    def __init__(self, settings: Settings, name: str, serve: Serve):
        self.settings, self.serve = settings, serve
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name=name, daemon=True)

    def start(self) -> BackgroundLoop:
        self._thread.start()
        self._started.wait(10)
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 30) -> None:
        """Ask the loop to stop (as SIGTERM would) and wait for it to finish what it must."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    async def _main(self) -> None:
        database = Database(self.settings)
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._started.set()
        try:
            await self.serve(database, self._stop)
        finally:
            await database.dispose()
