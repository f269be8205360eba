"""Per-request context: the principal, one database session, and DataLoaders built for this request only.

Loaders batch the lookups of one execution level into one query each, so the number of statements for a page
does not grow with the page size. Strawberry resolves sibling fields concurrently, and one AsyncSession must
not run two statements at once, so every database call goes through `read()`, which serialises them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext

from cellcommons.auth.principal import Principal
from cellcommons.catalogue import reading
from cellcommons.db import committed
from cellcommons.errors import Forbidden
from cellcommons.graphql.ids import Identifiers
from cellcommons.settings import Settings


class Context(BaseContext):
    def __init__(
        self,
        *,
        principal: Principal | None,
        session: AsyncSession,
        settings: Settings,
        ids: Identifiers,
        client_host: str | None = None,
    ):
        super().__init__()
        self.principal = principal
        self.session = session
        self.settings = settings
        self.ids = ids
        self.client_host = client_host
        self._lock = asyncio.Lock()
        self.rows = {model: self._row_loader(model) for model in reading.NODE_MODELS.values()}
        self.qc_results = self._group_loader(reading.qc_results_of)
        self.criteria = self._group_loader(reading.criteria_of)
        self.versions = self._group_loader(reading.versions_of)
        self.distributions = self._group_loader(reading.distributions_of)
        self.conditions = self._group_loader(reading.conditions_of)
        self.batches_of_version = self._group_loader(reading.batches_of)
        self.donor_counts = DataLoader(self._donor_counts)
        self.lookahead: dict[tuple, bool] = {}  # what a place in the query selects (connection.nodes_select)
        self.completes_ahead = False  # set by an execution that takes answers already completed (graphql.compiled)

    async def read(self, query: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        async with self._lock:
            return await query(self.session, *args)

    async def committed(self, work: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """A mutation's one transaction: commit what `work(session, principal, *args)` did, or roll back and
        re-raise."""
        return await self.read(committed, work, self.principal, *args)

    def signed_in(self, doing: str) -> Principal:
        """The principal; anonymous callers are refused naming what they tried."""
        if self.principal is None:
            raise Forbidden(f"sign in to {doing}")
        return self.principal

    def _row_loader(self, model: type) -> DataLoader:
        async def load(keys: list[uuid.UUID]) -> list[Any]:
            found = await self.read(reading.by_ids, self.principal, model, keys)
            return [found.get(key) for key in keys]

        return DataLoader(load)

    def _group_loader(self, query: Callable[..., Awaitable[dict]]) -> DataLoader:
        async def load(keys: list[uuid.UUID]) -> list[list]:
            grouped = await self.read(query, self.principal, keys)
            return [grouped.get(key, []) for key in keys]

        return DataLoader(load)

    async def _donor_counts(self, keys: list[uuid.UUID]) -> list[int]:
        counts = await self.read(reading.donor_counts, keys)
        return [counts.get(key, 0) for key in keys]

    def row(self, model: type, key: uuid.UUID) -> Awaitable[Any]:
        return self.rows[model].load(key)
