"""Sync fixtures: a database of the test's own with one institution, an in-memory connector, sources."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from cellcommons.catalogue.enums import Sector, TransferBasis
from cellcommons.catalogue.models import Batch, Institution
from cellcommons.catalogue.schemas import BatchIn
from cellcommons.db import Database
from cellcommons.settings import Settings
from cellcommons.sync.models import SyncSource
from cellcommons.sync.runtime import SyncRuntime
from cellcommons.sync.sdk import Bookmark, Connector, Page, Stream

SLUG = "leiden-scgt"
BM_MSC, BONE_MARROW = "CL:0002540", "UBERON:0002371"


def batch_record(lot: str, **fields: Any) -> dict[str, Any]:
    """A quarantined BM-MSC lot that passes every rule."""
    return {"lot_number": lot, "product_name": f"BM-MSC lot {lot}", "cell_type": BM_MSC, "tissue": BONE_MARROW,
            "passage": 3, **fields}  # fmt: skip


def memory_connector(
    rows: list[dict[str, Any]],
    *,
    page_size: int = 100,
    before_page: Callable[[int], Any] | None = None,
    full_snapshot: bool = False,
) -> type[Connector]:
    """A connector over a list of raw rows; `before_page(offset)` may raise or sleep (crashes, slowness).
    Rows with `_deleted` are tombstones; `modified` is the replication key."""

    class Rows(Stream):
        name = "batches"
        target = "batch"
        natural_key = ("lot_number",)
        schema = BatchIn
        replication_key = "modified"

    Rows.full_snapshot = full_snapshot

    async def read_pages(self, bookmark: Bookmark):
        offset = (bookmark or {}).get("offset", 0)
        while offset < len(rows):
            if before_page is not None:
                outcome = before_page(offset)
                if asyncio.iscoroutine(outcome):
                    await outcome
            chunk = rows[offset : offset + page_size]
            offset += len(chunk)
            records = [self.record({k: v for k, v in r.items() if k != "_deleted"}, deleted=r.get("_deleted", False))
                       for r in chunk]  # fmt: skip
            yield Page(records, {"offset": offset})

    Rows.read_pages = read_pages

    class Memory(Connector):
        def streams(self) -> list[Stream]:
            return [Rows()]

    return Memory


@dataclass
class SyncEnv:
    settings: Settings
    database: Database
    institution_id: Any

    def runtime(self, connector: type[Connector], **options: Any) -> SyncRuntime:
        return SyncRuntime(self.database, self.settings, connectors={"memory": connector}, **options)

    async def add_source(self, name: str = "lims", *, due: bool = False, connector: str = "memory") -> None:
        async with self.database.unit_of_work() as session:
            session.add(SyncSource(
                name=name, connector=connector, institution_id=self.institution_id, config={}, schedule="0 * * * *",
                next_run_at=datetime.now(UTC) - timedelta(minutes=1) if due else datetime.now(UTC) + timedelta(hours=1),
            ))  # fmt: skip

    async def lots(self) -> list[str]:
        async with self.database.unit_of_work() as session:
            return list(await session.scalars(select(Batch.lot_number).order_by(Batch.lot_number)))

    async def scalar(self, query) -> Any:
        async with self.database.unit_of_work() as session:
            return await session.scalar(query)

    async def count(self, model) -> int:
        return await self.scalar(select(func.count()).select_from(model))


async def make_env(settings: Settings) -> SyncEnv:
    database = Database(settings)
    async with database.unit_of_work() as session:
        institution = Institution(slug=SLUG, name="Leiden SCGT", country="NL", sector=Sector.non_profit,
                                  transfer_basis=TransferBasis.eea, origin_node=settings.node_id)  # fmt: skip
        session.add(institution)
        await session.flush()
    return SyncEnv(settings, database, institution.id)


@pytest.fixture
async def env(fresh_settings: Settings):
    sync_env = await make_env(fresh_settings)
    yield sync_env
    await sync_env.database.dispose()


@pytest.fixture
def sleeps() -> list[float]:
    """The backoff delays a runtime waited, when it is given `recorder(sleeps)` as its `sleep`."""
    return []


def recorder(sleeps: list[float]) -> Callable[[float], Awaitable[None]]:
    """A runtime's `sleep` that records each delay in `sleeps` instead of waiting."""

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return sleep


async def existing_env(settings: Settings) -> SyncEnv:
    """A SyncEnv over a database where `make_env` already added the institution."""
    database = Database(settings)
    async with database.unit_of_work() as session:
        institution_id = await session.scalar(select(Institution.id).where(Institution.slug == SLUG))
    return SyncEnv(settings, database, institution_id)
