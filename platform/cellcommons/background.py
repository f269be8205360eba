"""A polling loop (the export worker, the sync scheduler) on a thread of its own with its own event loop and
database engine, for `cellcommons demo`, which runs them beside the API in one process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from cellcommons.db import Database
from cellcommons.settings import Settings

# What a loop runs: given its database and the event that asks it to stop, serve until that is set.
Serve = Callable[[Database, asyncio.Event], Awaitable[None]]


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
