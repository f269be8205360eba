"""The issuer registry as the validator sees it: read from the database, cached for a short time."""

from __future__ import annotations

import asyncio
import time

from cellcommons.db import Database
from cellcommons.institutions.clients import PlatformDirectory
from cellcommons.institutions.service import TrustedIssuer, trusted_issuers


class IssuerRegistry:
    def __init__(self, database: Database, ttl: float = 30.0):
        self._database = database
        self._ttl = ttl
        self._issuers: dict[str, TrustedIssuer] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()
        self._platform = PlatformDirectory(database)  # the platform's own issuer (machine clients)

    async def lookup(self, issuer_url: str) -> TrustedIssuer | None:
        # An unknown issuer does not force a reload: a flood of forged `iss` values costs one query per TTL.
        if time.monotonic() - self._loaded_at >= self._ttl:
            async with self._lock:
                if time.monotonic() - self._loaded_at >= self._ttl:
                    async with self._database.unit_of_work() as session:
                        self._issuers = await trusted_issuers(session, self._platform)
                    self._loaded_at = time.monotonic()
        return self._issuers.get(issuer_url)

    def invalidate(self) -> None:
        self._loaded_at = float("-inf")
