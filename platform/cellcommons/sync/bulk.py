"""A page of rows in one statement: `COPY` them into a temporary staging table, then `INSERT … SELECT` from it.

An executemany of a 1 000-record page binds every value on its own (some 25 000 parameters for batches); one
array parameter per column (`unnest`) was several times faster, but PostgreSQL still parsed and cast every array
literal (about half the INSERT's time). `COPY` is the cheapest way in: the staging table takes the target's
column types (no constraints) and is dropped at commit, so it lives exactly as long as the page's transaction
(`python -m bench sync`). The INSERT then reads plain typed rows, and callers add ON CONFLICT and RETURNING.
Rows the caller knows to be new skip the staging and go straight into their table (`copy_rows`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from operator import itemgetter
from typing import Any

from psycopg.errors import DeadlockDetected, UniqueViolation
from sqlalchemy import ARRAY, JSON, ColumnElement, Select, String, Table, bindparam, column, func, select, table, true
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import TableClause

from cellcommons.db import driver_connection
from cellcommons.sync.sdk import TransientError


def _array_literal(values: list | None) -> str | None:
    if values is None:
        return None
    items = ('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(items) + "}"


def _enum_value(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


def _carrier(col) -> Callable[[Any], Any] | None:
    """How a value of the column travels through COPY; None: as it is (psycopg writes it)."""
    if isinstance(col.type, ARRAY):
        return _array_literal
    if isinstance(col.type, JSON):
        return _json_text
    if isinstance(col.type, SqlEnum):
        return _enum_value  # psycopg would write an Enum's name; the database type holds its value
    return None


async def _copy(
    session: AsyncSession, into: str, target: Table, names: Sequence[str], rows: list[dict[str, Any]]
) -> None:
    """COPY `rows` (values of `target`'s columns `names`) into the table named `into`."""
    values = itemgetter(*names) if len(names) > 1 else lambda row: (row[names[0]],)
    carried = [(i, carry) for i, n in enumerate(names) if (carry := _carrier(target.c[n])) is not None]
    connection = await driver_connection(session)
    async with connection.cursor() as cursor, cursor.copy(f"COPY {into} ({', '.join(names)}) FROM STDIN") as copy:
        for row in rows:
            line = values(row)
            if carried:
                line = list(line)
                for i, carry in carried:
                    line[i] = carry(line[i])
            await copy.write_row(line)


async def copy_rows(session: AsyncSession, target: Table, rows: list[dict[str, Any]]) -> None:
    """`rows` (which all have the same keys) COPYed straight into `target`: for rows known to be new a moment
    ago, whose ids the caller made. Should another writer have created one of their keys since, or hold one in a
    transaction of its own that waits for ours, the statement fails as a whole: a TransientError, so the page's
    transaction rolls back and the page lands again from its bookmark (then as an update)."""
    if not rows:
        return
    try:
        await _copy(session, target.name, target, list(rows[0]), rows)
    except (UniqueViolation, DeadlockDetected) as exc:
        raise TransientError(f"another writer created some of these {target.name} rows meanwhile: {exc}") from exc


async def staged(session: AsyncSession, target: Table, names: Sequence[str], rows: list[dict[str, Any]]) -> TableClause:
    """`rows` copied into a temporary table of `target`'s columns `names`, dropped when the transaction ends."""
    # Numbered per session (a unit of work is one transaction): two stagings in a transaction stay apart, and the
    # names repeat from page to page, so SQLAlchemy's statement cache keeps serving the compiled INSERT.
    number = next(session.info.setdefault("sync_stages", itertools.count()))
    name = f"stage_{target.name}_{number}"
    connection = await driver_connection(session)
    await connection.execute(
        f"CREATE TEMP TABLE {name} ON COMMIT DROP AS SELECT {', '.join(names)} FROM {target.name} LIMIT 0"
    )
    await _copy(session, name, target, names, rows)
    return table(name, *(column(n, target.c[n].type) for n in names))


def keys_table(keys: Iterable[str]):
    """`keys` as a table `page(key)`: one array parameter, whatever the number of keys."""
    return func.unnest(bindparam("keys", list(keys), type_=ARRAY(String))).table_valued("key").render_derived("page")


def per_key(keys: Iterable[str], entry: Callable[[ColumnElement], Select]) -> Select:
    """`entry(key)` (a query for one key) for each of `keys`, as one statement: a LATERAL … LIMIT 1 join, one
    index probe per key whatever the statistics say. A filter over a parameter array (`IN (…)`/`= ANY(…)`) is
    checked row by row against every row of the indexed prefix, and a plain join is planned as a hash of the
    whole table while its statistics still describe it as small (during a first large sync): both turned a
    run quadratic. A LATERAL subquery with LIMIT cannot be flattened into a hash join."""
    page = keys_table(keys)
    found = entry(page.c.key).limit(1).lateral("entry")
    return select(*found.c).select_from(page).join(found, true())


async def insert_rows(session: AsyncSession, target: Table, rows: list[dict[str, Any]], **computed: ColumnElement):
    """`INSERT INTO target (…) SELECT … FROM` a staging table holding `rows` (which all have the same keys), plus
    columns `computed` in SQL for every row (`id=func.gen_random_uuid()`); add ON CONFLICT and RETURNING."""
    names = list(rows[0])
    stage = await staged(session, target, names, rows)
    return pg_insert(target).from_select([*computed, *names], select(*computed.values(), *stage.c))
