"""Readiness: can this process reach what it needs to answer requests (the database and object storage)?

Liveness (`/healthz`) says only that the process runs; readiness (`/readyz`) is what a load balancer or
Kubernetes uses to send traffic elsewhere while a dependency is down. Each check is short and never retries:
a probe that hangs would be worse than one that says "down".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import urllib3
from minio import Minio
from sqlalchemy import text

from cellcommons.db import Database
from cellcommons.errors import CellCommonsError
from cellcommons.settings import Settings

CHECK_TIMEOUT = 2.0  # seconds per check; Kubernetes probes time out after a few seconds themselves


@dataclass
class Readiness:
    checks: dict[str, str] = field(default_factory=dict)  # component → "ok" or why it is down

    @property
    def down(self) -> list[str]:
        return [name for name, state in self.checks.items() if state != "ok"]

    @property
    def ready(self) -> bool:
        return not self.down


def probe_client(settings: Settings) -> Minio | None:
    """An S3 client of its own for probing: short timeouts and no retries (the shared client's SDK defaults
    retry for seconds, which a probe must not). None when no endpoint is configured, which readiness reports."""
    if not settings.s3_endpoint:
        return None
    timeout = urllib3.Timeout(connect=CHECK_TIMEOUT, read=CHECK_TIMEOUT)
    return Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key.get_secret_value(),
        secure=settings.s3_secure,
        region=settings.s3_region,
        http_client=urllib3.PoolManager(timeout=timeout, retries=False),
    )


async def _database(database: Database) -> None:
    async with database.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


def _object_storage(client: Minio, bucket: str) -> None:
    # Any answer proves the server is up and accepts our signature; whether the bucket exists is irrelevant.
    client.bucket_exists(bucket)


async def _check(name: str, work) -> tuple[str, str]:
    try:
        await asyncio.wait_for(work, CHECK_TIMEOUT)
    except TimeoutError:
        return name, f"no answer within {CHECK_TIMEOUT:g} s"
    except CellCommonsError as exc:
        return name, exc.message
    except Exception as exc:  # any failure means "not ready"; the reason is for the operator
        return name, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return name, "ok"


async def readiness(settings: Settings, database: Database, client: Minio | None) -> Readiness:
    storage = (
        asyncio.to_thread(_object_storage, client, settings.bucket("audit"))
        if client is not None
        else _not_configured()
    )
    results = await asyncio.gather(_check("database", _database(database)), _check("object_storage", storage))
    return Readiness(dict(results))


async def _not_configured() -> None:
    raise CellCommonsError("not configured (CELLCOMMONS_S3_ENDPOINT is not set)")
