"""Engine, session factories and the unit of work.

Services receive an AsyncSession and only flush; the edge that owns the work (a request, a job, a sync run,
a CLI command) opens a unit of work, which commits when the block succeeds and rolls back when it raises.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from sqlalchemy import Executable, MetaData, event
from sqlalchemy.dialects.postgresql.psycopg import PGDialectAsync_psycopg
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, ORMExecuteState, Session

from cellcommons.settings import Settings

T = TypeVar("T")

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


# Seconds a new connection may take. Without it libpq waits for a server that accepts and never answers until the
# operating system gives up (minutes): every request or probe meanwhile left one more attempt pending.
CONNECT_TIMEOUT = 5


def make_engine(url: URL, **kwargs: object) -> AsyncEngine:
    # Statement errors name the statement, not its values: parameters carry what users and sources sent (lay
    # summaries, donor data), and error messages end up in logs, job records and run histories.
    connect_args = {"connect_timeout": CONNECT_TIMEOUT, **kwargs.pop("connect_args", {})}
    return create_async_engine(url, pool_pre_ping=True, hide_parameters=True, connect_args=connect_args, **kwargs)


WROTE = "wrote"  # Session.info: the current transaction wrote something (flushed, or ran an INSERT/UPDATE/DELETE)


class TrackedSession(Session):
    """A session that knows whether its current transaction wrote anything (see `end_request`)."""


@event.listens_for(TrackedSession, "after_flush")
def _flushed(session: Session, _context: Any) -> None:
    session.info[WROTE] = True


@event.listens_for(TrackedSession, "do_orm_execute")
def _executed(state: ORMExecuteState) -> None:
    if not state.is_select:
        state.session.info[WROTE] = True


@event.listens_for(TrackedSession, "after_transaction_end")
def _ended(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(WROTE, None)


def make_sessionmaker(bind: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(bind, expire_on_commit=False, sync_session_class=TrackedSession)


async def end_request(session: AsyncSession) -> None:
    """Close a request's session. A transaction that only read is committed rather than rolled back — the same
    to the database, but psycopg forgets the statements it prepared on every rollback, so each request would
    parse and plan its statements afresh. Whatever wrote or holds changes its edge did not commit is rolled
    back: a flush, an INSERT/UPDATE/DELETE through the session, a `DriverStatement(writes=True)`, the driver
    connection, or pending ORM changes. (A SELECT of a function that writes must be declared as such.)"""
    pending = session.new or session.dirty or session.deleted
    if session.in_transaction() and not pending and not session.info.get(WROTE):
        try:
            await session.commit()
        except InvalidRequestError:
            pass  # a statement failed and left the transaction to be rolled back: closing does
    await session.close()


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


def with_database(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    """`work(database)` run to completion from synchronous code (a command), the engine disposed afterwards."""

    async def run() -> T:
        database = Database(settings)
        try:
            return await work(database)
        finally:
            await database.dispose()

    return asyncio.run(run())


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


async def driver_connection(session: AsyncSession) -> psycopg.AsyncConnection:
    """The psycopg connection under the session's current transaction (COPY is not in SQLAlchemy); what runs on it
    counts as a write (`end_request`)."""
    session.info[WROTE] = True
    raw = await (await session.connection()).get_raw_connection()
    return raw.driver_connection


# The dialect statements run on the driver are compiled with, and their values converted by.
DRIVER_DIALECT = PGDialectAsync_psycopg()


class DriverStatement:
    """A Core statement compiled once into psycopg's SQL, its constants converted once, run on the session's own
    connection (so inside its transaction: the edge still commits). For the few statements on the hottest path
    (URL issuance): SQLAlchemy's per-execution work, not the query, is most of their cost there. Rows come back
    as plain tuples; errors as SQLAlchemy's, like any other statement's."""

    _dialect = DRIVER_DIALECT

    def __init__(self, statement: Executable, *, writes: bool = False):
        self.writes = writes  # marks the session's transaction as having written (see `end_request`)
        compiled = statement.compile(dialect=self._dialect)
        required = {name: bind for bind, name in compiled.bind_names.items() if bind.required}
        assert not any(bind.expanding for bind in required.values()), "a list given at each call is not supported"
        # A list of constants (`IN`) is a post-compile placeholder SQLAlchemy expands at each execution; psycopg
        # knows nothing of it, so it is expanded here, once: one parameter per value, each converted by its type.
        expanded = compiled.construct_expanded_state(dict.fromkeys(required))
        self.sql = expanded.statement
        self._convert = {
            name: bind.type.dialect_impl(self._dialect).bind_processor(self._dialect) for name, bind in required.items()
        }
        self._constants = {}
        for name, value in expanded.parameters.items():
            if name not in required:
                convert = expanded.processors.get(name)
                self._constants[name] = convert(value) if convert else value
        self.parameters = frozenset(self._convert)  # the names a call must give

    async def rows(self, session: AsyncSession, **params: Any) -> list[tuple]:
        if session.new or session.dirty or session.deleted:
            await session.flush()  # as the session's autoflush would before a query
        if self.writes:
            session.info[WROTE] = True
        values = dict(self._constants)
        for name, value in params.items():
            convert = self._convert[name]
            values[name] = convert(value) if convert else value
        # The pooled DBAPI connection the session's transaction runs on; its psycopg connection underneath.
        connection = (await session.connection()).sync_connection
        try:
            async with connection.connection.driver_connection.cursor() as cursor:
                # Seen by the engine's cursor listeners like any other statement (tests count statements).
                connection.dispatch.before_cursor_execute(connection, cursor, self.sql, values, None, False)
                await cursor.execute(self.sql, values)
                return await cursor.fetchall()
        except psycopg.Error as error:
            raise DBAPIError.instance(self.sql, values, error, psycopg.Error) from error
