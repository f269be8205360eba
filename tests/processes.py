"""Running the `cellcommons` command as a separate process against a test's own database and S3 server."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import httpx

from cellcommons.settings import Settings


def cli_environment(settings: Settings) -> dict[str, str]:
    """This process's environment without any CELLCOMMONS_ variable, plus the ones that point at `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLCOMMONS_")}
    return env | {
        "CELLCOMMONS_ENVIRONMENT": "test",
        "CELLCOMMONS_DATABASE_URL": settings.database_url,
        "CELLCOMMONS_S3_ENDPOINT": settings.s3_endpoint,
        "CELLCOMMONS_S3_ACCESS_KEY": settings.s3_access_key,
        "CELLCOMMONS_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
        "CELLCOMMONS_BUCKET_PREFIX": settings.bucket_prefix,
    }


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def answers(url: str) -> bool:
    """Whether a GET of `url` answers 200 now (False while nothing listens)."""
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False
