"""A page of rows in one statement: `INSERT … SELECT … FROM unnest(arrays)`, one array parameter per column.

An executemany of a 1 000-record page binds every value on its own (some 25 000 parameters for batches); one
array per column lets PostgreSQL unpack the page itself, several times faster (`python -m bench sync`).
Columns whose values are arrays or JSON cannot ride in a one-dimensional array: they travel as text (an array
literal, a JSON document) and are cast back row by row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

from sqlalchemy import ARRAY, JSON, Table, bindparam, text
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql.expression import TextualSelect

_DIALECT = postgresql.dialect()


def _nested(column) -> bool:
    return isinstance(column.type, ARRAY | JSON)


def _array_literal(values: list | None) -> str | None:
    if values is None:
        return None
    items = ('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(items) + "}"


def _enum_value(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


def _carrier(column) -> Callable[[Any], Any] | None:
    """How a value of the column travels; None: as it is (the common case, kept a plain list copy)."""
    if isinstance(column.type, ARRAY):
        return _array_literal
    if isinstance(column.type, JSON):
        return _json_text
    if isinstance(column.type, SqlEnum):
        return _enum_value
    return None


def _column(column, rows: list[dict[str, Any]]) -> list[Any]:
    carry, name = _carrier(column), column.name
    return [row[name] for row in rows] if carry is None else [carry(row[name]) for row in rows]


def unnested(table: Table, names: Sequence[str], rows: list[dict[str, Any]]) -> TextualSelect:
    """`SELECT … FROM unnest(…)` yielding `rows` as rows of `table`'s columns `names`, parameters bound."""
    columns = [table.c[name] for name in names]
    arrays, outputs, params = [], [], []
    for index, column in enumerate(columns):
        sql_type = column.type.compile(dialect=_DIALECT)
        carried = "TEXT" if _nested(column) else sql_type
        arrays.append(f"CAST(:c{index} AS {carried}[])")
        outputs.append(f"CAST(u.c{index} AS {sql_type})" if _nested(column) else f"u.c{index}")
        params.append(bindparam(f"c{index}", _column(column, rows)))
    aliases = ", ".join(f"c{i}" for i in range(len(columns)))
    query = f"SELECT {', '.join(outputs)} FROM unnest({', '.join(arrays)}) AS u({aliases})"
    return text(query).bindparams(*params).columns(*columns)


def insert_rows(table: Table, rows: list[dict[str, Any]]):
    """`INSERT INTO table (…) SELECT … FROM unnest(…)` of rows that all have the same keys; add ON CONFLICT and
    RETURNING to taste."""
    names = list(rows[0])
    return pg_insert(table).from_select(names, unnested(table, names, rows))
