"""The scheduler: runs due sources, again and again.

Several schedulers may run at once: each due source is run under its advisory lock, and a scheduler that
gets the lock after another has finished the run sees the source is no longer due and leaves it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from cellcommons.access.decisions import keep_agreements_current
from cellcommons.background import BackgroundLoop
from cellcommons.db import Database
from cellcommons.errors import Unavailable
from cellcommons.outages import outlasting, unavailable_from
from cellcommons.settings import Settings
from cellcommons.storage.cleanup import keep_clean
from cellcommons.sync import repository
from cellcommons.sync.models import RunTrigger, SyncRun
from cellcommons.sync.runtime import AlreadyRunning, BreakerOpen, SyncRuntime

log = logging.getLogger(__name__)


async def tick(runtime: SyncRuntime) -> list[SyncRun]:
    """Run every due source once, one after another; returns the runs this scheduler made."""
    async with runtime.database.unit_of_work() as session:
        names = await repository.due_sources(session, datetime.now(UTC))
    runs = []
    for name in names:
        if runtime.stop is not None and runtime.stop.is_set():
            break  # shutting down: the sources left are still due for the next scheduler
        try:
            run = await runtime.run(name, trigger=RunTrigger.schedule)
        except (AlreadyRunning, BreakerOpen):
            continue  # another scheduler has it, or it failed since we looked
        except Exception as exc:
            if unavailable_from(exc) is not None:
                raise  # an outage: the tick ends, the loop waits it out (`outlasting`)
            # One source's trouble is not the others': they still run. (A failure to start the run that the
            # runtime could not record as a failed run, e.g. a source removed meanwhile.)
            log.exception("scheduler: source %r could not be run", name)
            continue
        if run is not None:
            runs.append(run)
    return runs


async def serve(
    runtime: SyncRuntime, interval: float, stop: asyncio.Event, on_runs: Callable[[list[SyncRun]], None]
) -> None:
    """Tick every `interval` seconds until `stop` is set; an outage skips a tick, it does not end the loop."""

    def report(down: Unavailable) -> None:
        log.warning("scheduler: %s; trying again in %g s", down.message, interval)

    while not stop.is_set():
        runs = await outlasting(lambda: tick(runtime), report)
        if runs:
            on_runs(runs)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            pass


async def scheduler_duties(
    database: Database,
    settings: Settings,
    stop: asyncio.Event,
    interval: float,
    on_runs: Callable[[list[SyncRun]], None],
) -> None:
    """What a scheduler process does until `stop`: run due sources and, hourly, clean object storage (abandoned
    uploads in staging, files and export results no record names: storage/cleanup.py) and sweep data-use
    agreements (expire ended ones, start begun ones, warn of ending ones: access/decisions.py)."""
    duties = [
        asyncio.create_task(keep_clean(database, settings, stop)),
        asyncio.create_task(keep_agreements_current(database, stop)),
    ]
    await serve(SyncRuntime(database, settings, stop=stop), interval, stop, on_runs)
    await asyncio.gather(*duties)


def background_scheduler(settings: Settings, interval: float = 5.0) -> BackgroundLoop:
    """A scheduler on a thread of its own (the demo runs one beside the API); `stop()` ends the run in
    progress after its page."""

    async def duties(database: Database, stop: asyncio.Event) -> None:
        await scheduler_duties(database, settings, stop, interval, lambda runs: None)

    return BackgroundLoop(settings, "scheduler", duties)
