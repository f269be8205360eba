"""Engine, session factories and the unit of work.

Services receive an AsyncSession and only flush; the edge that owns the work (a request, a job, a sync run,
a CLI command) opens a unit of work, which commits when the block succeeds and rolls back when it raises.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from cellcommons.settings import Settings

# Stable constraint names, so migrations and error messages can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def make_engine(url: URL, **kwargs: object) -> AsyncEngine:
    return create_async_engine(url, pool_pre_ping=True, **kwargs)


def make_sessionmaker(bind: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(bind, expire_on_commit=False)


class Database:
    """The application role's engine and session factory for one process."""

    def __init__(self, settings: Settings):
        # No JIT: the policy's EXISTS subqueries push a facet's estimated cost past jit_above_cost, and compiling
        # then takes 150-250 ms of a query that runs in 50 ms (bench graphql); nothing here scans long enough
        # for compiled expressions to pay that back.
        self.engine = make_engine(settings.app_url, connect_args={"options": "-c jit=off"})
        self.sessions = make_sessionmaker(self.engine)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


async def committed(
    session: AsyncSession, work: Callable[..., Awaitable[Any]], *args: Any, keep_on: tuple = (), **kwargs: Any
) -> Any:
    """An edge's transaction in a session it already holds: commit what `work(session, ...)` did, or roll back
    and re-raise. An error in `keep_on` is a refusal the service recorded (a rejected upload): it is committed
    first and then raised."""
    try:
        result = await work(session, *args, **kwargs)
    except keep_on:
        await session.commit()
        raise
    except BaseException:
        await session.rollback()
        raise
    await session.commit()
    return result
