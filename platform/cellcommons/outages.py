"""Which failures mean "a component the platform depends on is down", as opposed to a bug or a bad request.

The API answers those with 503 and code `unavailable` (REST and GraphQL alike) so that clients retry and
operators see at once what is down; everything else stays an internal error. Transactions make such a failure
safe: the unit of work rolls back, and the pool replaces dead connections (`pool_pre_ping`) once the
component is back, so nothing needs a restart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
from minio.error import ServerError
from sqlalchemy import exc as sa
from urllib3.exceptions import HTTPError

from cellcommons.errors import Unavailable

DATABASE_DOWN = "the database is unavailable; try again shortly"
OBJECT_STORAGE_DOWN = "object storage is unavailable; try again shortly"

# SQLSTATEs of a lost or refused connection: class 08, and the server shutting down or still starting.
_CONNECTION_STATES = ("08", "57P01", "57P02", "57P03")


def _connection_lost(error: BaseException | None) -> bool:
    # psycopg reports a refused or broken connection without a SQLSTATE. Other OperationalErrors (a
    # serialization failure, a lock or statement timeout) come from a working server and are not outages.
    if not isinstance(error, psycopg.OperationalError):
        return False
    state = error.sqlstate
    return state is None or state.startswith(_CONNECTION_STATES)


def unavailable_from(error: BaseException) -> Unavailable | None:
    """The `Unavailable` error that `error` amounts to, or None when it is not an outage."""
    if isinstance(error, Unavailable):
        return error
    if isinstance(error, sa.TimeoutError):  # no pooled connection freed up in time: the database is stuck
        return Unavailable(DATABASE_DOWN)
    if isinstance(error, sa.DBAPIError) and (error.connection_invalidated or _connection_lost(error.orig)):
        return Unavailable(DATABASE_DOWN)
    if _connection_lost(error):
        return Unavailable(DATABASE_DOWN)
    if isinstance(error, HTTPError | ServerError):  # minio's transport, or S3 answering 5xx
        return Unavailable(OBJECT_STORAGE_DOWN)
    return None


# What the API registers a handler for; `unavailable_from` decides whether each instance is an outage.
OUTAGE_TYPES: tuple[type[BaseException], ...] = (
    sa.TimeoutError,
    sa.DBAPIError,
    psycopg.OperationalError,
    HTTPError,
    ServerError,
)


T = TypeVar("T")


async def outlasting(work: Callable[[], Awaitable[T]], on_outage: Callable[[Unavailable], None]) -> T | None:
    """One round of a polling loop (the scheduler, the export worker) that a database or object-storage outage
    must not end: the outage is reported and the round gives None, so the loop tries again on its next turn."""
    try:
        return await work()
    except Exception as exc:
        down = unavailable_from(exc)
        if down is None:
            raise
        on_outage(down)
        return None
