"""Readiness: can this process reach what it needs to answer requests (the database and object storage)?

Liveness (`/healthz`) says only that the process runs; readiness (`/readyz`) is what a load balancer or
Kubernetes uses to send traffic elsewhere while a dependency is down. Each check is short and never retries:
a probe that hangs would be worse than one that says "down".

Anyone who reaches `/readyz` reads its answer, so a failed check says only why in general terms (below):
driver messages name hosts, ports, buckets and roles. The full error goes to the log, for the operator.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import psycopg
import urllib3
from minio import Minio
from minio.error import S3Error
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from urllib3.exceptions import HTTPError, NewConnectionError

from cellcommons.db import Database
from cellcommons.errors import CellCommonsError
from cellcommons.settings import Settings

CHECK_TIMEOUT = 2.0  # seconds per check; Kubernetes probes time out after a few seconds themselves

UNREACHABLE = "unreachable"  # no connection: refused, no route, unknown host, reset
TIMED_OUT = "timed out"
REFUSED_CREDENTIALS = "refused credentials"  # object storage refused the access key or its signature
REFUSED_CONNECTION = "refused the connection"  # PostgreSQL answered and refused: role, password, database, pg_hba
FAILING = "answering with errors"  # anything else, e.g. object storage answering 5xx

# S3 error codes of a key the server does not know or a signature it does not accept.
_CREDENTIAL_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}

log = logging.getLogger(__name__)


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


async def _check(name: str, target: str, work) -> tuple[str, str]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await asyncio.wait_for(work, CHECK_TIMEOUT)
    except CellCommonsError as exc:  # the platform's own words, written for whoever reads them
        return name, exc.message
    except Exception as exc:  # any failure means "not ready"
        # A connection attempt cut short by the timeout may end in the driver's own error rather than TimeoutError
        reason = TIMED_OUT if loop.time() - started >= CHECK_TIMEOUT else _reason(exc)
        detail = (
            f"no answer within {CHECK_TIMEOUT:g} s" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        )
        log.warning("readiness: %s at %s %s: %s", name, target, reason, detail)
        return name, reason
    return name, "ok"


def _reason(error: Exception) -> str:
    """Why a check failed, in words that name no host, port, bucket, role or driver."""
    if isinstance(error, DBAPIError):
        error = error.orig
    if isinstance(error, psycopg.OperationalError) and error.sqlstate is None:
        # A failed connection carries no SQLSTATE; libpq quotes the server's refusal ("FATAL:  role … does not
        # exist") when there was a server to refuse, else the socket's error.
        return REFUSED_CONNECTION if "FATAL:" in str(error) else UNREACHABLE
    if isinstance(error, NewConnectionError):  # a urllib3 TimeoutError too, yet nothing answered at all
        return UNREACHABLE
    if isinstance(error, TimeoutError | urllib3.exceptions.TimeoutError):
        return TIMED_OUT
    if isinstance(error, S3Error) and error.code in _CREDENTIAL_CODES:
        return REFUSED_CREDENTIALS
    if isinstance(error, HTTPError):  # minio's transport: a reset, a broken TLS handshake …
        return UNREACHABLE
    return FAILING


async def readiness(settings: Settings, database: Database, client: Minio | None) -> Readiness:
    bucket = settings.bucket("audit")
    storage = asyncio.to_thread(_object_storage, client, bucket) if client is not None else _not_configured()
    results = await asyncio.gather(
        _check("database", settings.app_url.render_as_string(hide_password=True), _database(database)),
        _check("object_storage", f"{settings.s3_endpoint} (bucket {bucket})", storage),
    )
    return Readiness(dict(results))


async def _not_configured() -> None:
    raise CellCommonsError("not configured (CELLCOMMONS_S3_ENDPOINT is not set)")
