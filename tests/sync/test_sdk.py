"""The SDK's helper for blocking sources: pages read in a thread, and the generator closed when reading stops."""

from __future__ import annotations

import asyncio
import threading
import time

from cellcommons.sync.sdk import Page, pages_in_thread


def _blocking(closed: threading.Event, slow_from: int = 99):
    try:
        for n in range(5):
            if n >= slow_from:
                time.sleep(0.3)  # a slow file or SDK call
            yield Page([], {"n": n})
    finally:
        closed.set()


async def test_pages_come_in_order_and_the_generator_closes_at_the_end():
    closed = threading.Event()
    assert [page.bookmark["n"] async for page in pages_in_thread(_blocking(closed))] == [0, 1, 2, 3, 4]
    assert closed.is_set()


async def test_a_read_cancelled_in_flight_finishes_in_its_thread_and_the_generator_is_closed():
    closed = threading.Event()
    pages = pages_in_thread(_blocking(closed, slow_from=1))
    assert (await anext(pages)).bookmark == {"n": 0}
    ahead = asyncio.ensure_future(anext(pages))  # as the runtime reads ahead
    await asyncio.sleep(0.05)  # the second read is sleeping in its thread
    ahead.cancel()
    await asyncio.gather(ahead, return_exceptions=True)
    assert ahead.cancelled() and closed.is_set()  # waited for the read, then closed the generator
