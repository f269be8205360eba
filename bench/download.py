"""Downloads: URL issuance with its audit write (one transaction each) against bare presigning, and throughput
through a presigned URL against a direct S3 GET of the same object, same server, same run.

Issuance is measured as the API serves it: concurrent requests in one worker process, and the same in as many
worker processes as the machine has cores (`cellcommons serve --workers`), all appending to the one audit chain.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import time
from datetime import timedelta

import urllib3
from rich.console import Console

# The published file is set up exactly as the tests do it, through the real upload path.
from tests.storage.files import institution, member, published_file

from bench.report import Measure, Report, rate
from cellcommons.auth.principal import Role
from cellcommons.db import Database
from cellcommons.demo.scratch import ScratchStack
from cellcommons.storage import ObjectStore, buckets, downloads

MiB = 1024 * 1024
CHUNK = MiB
CONCURRENT = 8  # requests in flight, as an API worker serves them
WORKERS = max(2, os.cpu_count() or 1)  # API worker processes
DOWNLOAD_TURNS = 5


def run(stack: ScratchStack, quick: bool, console: Console) -> Report:
    settings = stack.new_database()
    try:
        with console.status("measuring downloads…"):
            return asyncio.run(_measure(settings, quick))
    finally:
        stack.drop(settings)


async def _measure(settings, quick: bool) -> Report:
    load_before = os.getloadavg()[0]
    store = ObjectStore.from_settings(settings)
    size = (8 if quick else 256) * MiB
    issuances = 200 if quick else 2000
    content = bytes(range(256)) * (size // 256)
    database = Database(settings)
    try:
        shared = await published_file(database, store, settings, "leiden-scgt", "restricted", content)
        async with database.unit_of_work() as session:
            steward = member(await institution(session, "leiden-scgt"), Role.steward)
            view = await downloads.file_for_download(session, steward, shared.distribution_id)
        bucket = buckets.institution_bucket(settings, view.custodian_id)
        key = view.distribution.storage_key
        issued, bare = await _issuance_rates(database, store, settings, steward, shared.distribution_id, bucket, key,
                                             issuances)  # fmt: skip
        in_workers = _issuance_in_workers(settings, steward, shared.distribution_id, issuances)
        async with database.unit_of_work() as session:
            url = (await downloads.issue_download_url(session, store, settings, steward, shared.distribution_id,
                                                      expires_in=900)).url  # fmt: skip
    finally:
        await database.dispose()
    expected = hashlib.sha256(content).hexdigest()
    http = urllib3.PoolManager()
    presigned, direct = _alternating(
        lambda: _fetch(http.request("GET", url, preload_content=False), expected) // MiB,
        lambda: _fetch(store.client.get_object(bucket, key), expected) // MiB,
    )
    return Report(
        "download",
        measures=[
            Measure("URL issuance with audit write", issued, bare, "urls/s", "presign only"),
            Measure(f"URL issuance with audit write, {WORKERS} workers", in_workers, bare, "urls/s", "presign only"),
            Measure("download via presigned URL", presigned, direct, "MiB/s", "direct S3 GET", target=0.95),
        ],
        notes=[
            f"issuance: {issuances} URLs from {CONCURRENT} concurrent requesters in one process, and from "
            f"{CONCURRENT} in each of {WORKERS} processes, one transaction each (policy and DUA statement, audit "
            f"append, commit), best of 3; {os.cpu_count()} cores; "
            f"target ≥ 500 urls/s: {'ok' if max(issued, in_workers) >= 500 else 'MISSED'}; the machine's 1-minute "
            f"load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after (issuance is CPU-bound: "
            "on a shared machine other work lowers it)",
            f"download: a {size // MiB} MiB object streamed in 1 MiB chunks and hashed on both paths "
            f"(urllib3 for both), the two paths taking turns, best of {DOWNLOAD_TURNS} each",
        ],
    )


async def _issuance_rates(database, store, settings, principal, distribution_id, bucket, key, count):
    """Issuance as the API serves it: concurrent requests, each its own transaction."""
    best_issued = best_bare = 0.0
    for _ in range(3):
        start = time.perf_counter()
        await _issue_concurrently(database, store, settings, principal, distribution_id, count)
        best_issued = max(best_issued, count // CONCURRENT * CONCURRENT / (time.perf_counter() - start))
        start = time.perf_counter()
        for _ in range(count):
            store.presign_get(bucket, key, timedelta(minutes=5), file_name="cells.csv")
        best_bare = max(best_bare, count / (time.perf_counter() - start))
    return best_issued, best_bare


def _issuance_in_workers(settings, principal, distribution_id, count: int) -> float:
    """Best of 3: `WORKERS` processes start together, each issuing its share from `CONCURRENT` requesters."""
    share = count // WORKERS // CONCURRENT * CONCURRENT
    best = 0.0
    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        pool.starmap(_worker, [(settings, principal, distribution_id, CONCURRENT, time.time())] * WORKERS)  # warm
        for _ in range(3):
            start_at = time.time() + 3.0  # every process connected and waiting
            spans = pool.starmap(_worker, [(settings, principal, distribution_id, share, start_at)] * WORKERS)
            best = max(best, share * WORKERS / (max(end for _, end in spans) - min(start for start, _ in spans)))
    return best


def _worker(settings, principal, distribution_id, count: int, start_at: float) -> tuple[float, float]:
    """One API worker process: `CONCURRENT` requesters issuing `count` URLs in all from `start_at`."""

    async def issue() -> tuple[float, float]:
        database, store = Database(settings), ObjectStore.from_settings(settings)
        try:

            async def look() -> None:
                async with database.unit_of_work() as session:
                    await downloads.file_for_download(session, principal, distribution_id)

            await asyncio.gather(*(look() for _ in range(CONCURRENT)))  # every connection open before the start
            await asyncio.sleep(max(0.0, start_at - time.time()))
            started = time.time()  # later than start_at only if this process was not ready in time
            await _issue_concurrently(database, store, settings, principal, distribution_id, count)
            return max(start_at, started), time.time()
        finally:
            await database.dispose()

    return asyncio.run(issue())


async def _issue_concurrently(database, store, settings, principal, distribution_id, count: int) -> None:
    """`CONCURRENT` requesters issuing `count // CONCURRENT` URLs each, every one in its own transaction."""

    async def requester() -> None:
        for _ in range(count // CONCURRENT):
            async with database.unit_of_work() as session:
                await downloads.issue_download_url(session, store, settings, principal, distribution_id)

    await asyncio.gather(*(requester() for _ in range(CONCURRENT)))


def _alternating(first, second) -> tuple[float, float]:
    """Best rate of each of two transfers run by turns, so that a noisy neighbour slows both alike."""
    best = [0.0, 0.0]
    for _ in range(DOWNLOAD_TURNS):
        for i, work in enumerate((first, second)):
            best[i] = max(best[i], rate(work, repeat=1))
    return best[0], best[1]


def _fetch(response, expected: str) -> int:
    """Stream and hash the body (a client verifying its download); the bytes read."""
    digest, total = hashlib.sha256(), 0
    try:
        for chunk in response.stream(CHUNK):
            digest.update(chunk)
            total += len(chunk)
    finally:
        response.release_conn()
    assert digest.hexdigest() == expected
    return total
