"""Row filters checked against the exported schema: every refusal names the condition's field."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cellcommons.errors import InvalidInput
from cellcommons.exports import filters

SCHEMA = pa.schema([("age", pa.string()), ("cell_count", pa.int64()), ("lot_number", pa.string())])


@pytest.mark.parametrize(
    ("condition", "field", "message"),
    [
        ({"column": "cell_count", "op": "eq", "value": 2**70}, "filter[0].value", "is not a int64 value"),
        ({"column": "cell_count", "op": "in", "value": [1, -(2**64)]}, "filter[0].value", "is not a int64 value"),
        ({"column": "age", "op": "lt", "value": "45-49"}, "filter[0].op", "band labels, which compare as text"),
    ],
)
def test_bad_conditions_are_refused_naming_their_field(condition, field, message):
    with pytest.raises(InvalidInput, match=message) as refused:
        filters.validated([condition], SCHEMA, banded=["age"])
    assert refused.value.field == field


def test_band_labels_compare_for_equality_and_other_text_in_order():
    conditions = [{"column": "age", "op": "in", "value": ["40-44", "45-49"]},
                  {"column": "lot_number", "op": "ge", "value": "L2"}]  # fmt: skip
    assert filters.validated(conditions, SCHEMA, banded=["age"]) == conditions
    table = pa.table({"age": ["40-44", "100-104", "45-49"], "cell_count": [1, 2, 3], "lot_number": ["L3", "L9", "L1"]})
    assert table.filter(filters.combined(conditions, SCHEMA, banded=["age"])).column("cell_count").to_pylist() == [1]
