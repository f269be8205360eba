"""Downloads: URL issuance with its audit write (one transaction each) against bare presigning, and throughput
through a presigned URL against a direct S3 GET of the same object, same server, same run."""

from __future__ import annotations

import asyncio
import hashlib
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


def run(stack: ScratchStack, quick: bool, console: Console) -> Report:
    settings = stack.new_database()
    try:
        with console.status("measuring downloads…"):
            return asyncio.run(_measure(settings, quick))
    finally:
        stack.drop(settings)


async def _measure(settings, quick: bool) -> Report:
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
        async with database.unit_of_work() as session:
            url = (await downloads.issue_download_url(session, store, settings, steward, shared.distribution_id,
                                                      expires_in=900)).url  # fmt: skip
    finally:
        await database.dispose()
    expected = hashlib.sha256(content).hexdigest()
    http = urllib3.PoolManager()
    presigned = rate(lambda: _fetch(http.request("GET", url, preload_content=False), expected) // MiB)
    direct = rate(lambda: _fetch(store.client.get_object(bucket, key), expected) // MiB)
    return Report(
        "download",
        measures=[
            Measure("URL issuance with audit write", issued, bare, "urls/s", "presign only"),
            Measure("download via presigned URL", presigned, direct, "MiB/s", "direct S3 GET", target=0.95),
        ],
        notes=[
            f"issuance: {issuances} URLs from {CONCURRENT} concurrent requesters, one transaction each (DUA and "
            f"policy queries, audit append, commit), best of 3; "
            f"target ≥ 500 urls/s: {'ok' if issued >= 500 else 'MISSED'}",
            f"download: a {size // MiB} MiB object streamed in 1 MiB chunks and hashed on both paths "
            "(urllib3 for both), best of 3",
        ],
    )


async def _issuance_rates(database, store, settings, principal, distribution_id, bucket, key, count):
    """Issuance as the API serves it: concurrent requests, each its own transaction."""

    async def requester(share: int) -> None:
        for _ in range(share):
            async with database.unit_of_work() as session:
                await downloads.issue_download_url(session, store, settings, principal, distribution_id)

    best_issued = best_bare = 0.0
    for _ in range(3):
        start = time.perf_counter()
        await asyncio.gather(*(requester(count // CONCURRENT) for _ in range(CONCURRENT)))
        best_issued = max(best_issued, count // CONCURRENT * CONCURRENT / (time.perf_counter() - start))
        start = time.perf_counter()
        for _ in range(count):
            store.presign_get(bucket, key, timedelta(minutes=5), file_name="cells.csv")
        best_bare = max(best_bare, count / (time.perf_counter() - start))
    return best_issued, best_bare


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
