"""Row filters of an export: a list of conditions ANDed together, each `{column, op, value}`.

A filter applies to the exported values, after the policy: filtering on the exact age before banding it, or on
a column the policy drops, would let the filter reveal what the export hides. So a filter may only name an
exported column, and compares with the value as exported (a band label, the first of a month, a pseudonym).
Band labels are text, so they only compare for (in)equality: "100-104" would sort before "45-49".
"""

from __future__ import annotations

import operator
from collections.abc import Collection
from functools import reduce

import pyarrow as pa
import pyarrow.compute as pc

from cellcommons.errors import InvalidInput

_COMPARISONS = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt,
                "ge": operator.ge}  # fmt: skip
_ORDERINGS = {"lt", "le", "gt", "ge"}
OPERATORS = (*_COMPARISONS, "in", "is_null", "not_null")
MAX_CONDITIONS = 20


def validated(conditions: object, schema: pa.Schema, banded: Collection[str] = ()) -> list[dict]:
    """The conditions as JSON-safe dicts, each checked against the exported schema (the error names it);
    `banded`: the columns exported as band labels."""
    if conditions is None:
        return []
    if not isinstance(conditions, list) or len(conditions) > MAX_CONDITIONS:
        raise InvalidInput(f"must be a list of at most {MAX_CONDITIONS} conditions", field="filter")
    for index, condition in enumerate(conditions):
        expression(condition, schema, f"filter[{index}]", banded)
    return conditions


def expression(condition: object, schema: pa.Schema, field: str, banded: Collection[str] = ()) -> pc.Expression:
    if not isinstance(condition, dict) or set(condition) - {"column", "op", "value"}:
        raise InvalidInput("must be {column, op, value}", field=field)
    column, op = condition.get("column"), condition.get("op")
    if not isinstance(column, str) or schema.get_field_index(column) < 0:
        raise InvalidInput(f"{column!r} is not an exported column", field=f"{field}.column")
    if op not in OPERATORS:
        raise InvalidInput(f"must be one of {', '.join(OPERATORS)}", field=f"{field}.op")
    if op in _ORDERINGS and column in banded:
        message = f"{column!r} holds band labels, which compare as text: use eq, ne or in"
        raise InvalidInput(message, field=f"{field}.op")
    target = pc.field(column)
    if op == "is_null":
        return target.is_null()
    if op == "not_null":
        return target.is_valid()
    kind = schema.field(column).type
    value = condition.get("value")
    if op == "in":
        if not isinstance(value, list) or not value:
            raise InvalidInput("must be a non-empty list", field=f"{field}.value")
        return target.isin(pa.array([_scalar(v, kind, f"{field}.value").as_py() for v in value], kind))
    return _COMPARISONS[op](target, _scalar(value, kind, f"{field}.value"))


def combined(conditions: list[dict], schema: pa.Schema, banded: Collection[str] = ()) -> pc.Expression | None:
    if not conditions:
        return None
    return reduce(operator.and_, (expression(c, schema, f"filter[{i}]", banded) for i, c in enumerate(conditions)))


def _scalar(value: object, kind: pa.DataType, field: str) -> pa.Scalar:
    if value is None or isinstance(value, dict | list):
        raise InvalidInput(f"must be a {kind} value", field=field)
    try:
        return pa.scalar(value).cast(kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError):
        raise InvalidInput(f"{value!r} is not a {kind} value", field=field) from None
