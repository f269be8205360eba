"""CSV sources read straight from their bytes (no server needed): what is missing, what is malformed and on
which physical line, and what a header may not do."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cellcommons.access.schemas import ColumnTreatment
from cellcommons.catalogue.enums import Sensitivity
from cellcommons.errors import InvalidInput
from cellcommons.exports.errors import MalformedRow
from cellcommons.exports.models import BadRows
from cellcommons.exports.policy import ColumnPlan
from cellcommons.exports.sources import Quarantine, csv_batches

PLANS = [
    ColumnPlan("name", Sensitivity.plain, ColumnTreatment.keep, pa.string()),
    ColumnPlan("n", Sensitivity.plain, ColumnTreatment.keep, pa.int64()),
]


def read(*chunks: bytes, mode: BadRows = BadRows.quarantine) -> tuple[list[dict], Quarantine]:
    quarantine = Quarantine(mode)
    batches = list(csv_batches(iter(chunks), PLANS, None, quarantine))
    return pa.Table.from_batches(batches).to_pylist() if batches else [], quarantine


def lines(quarantine: Quarantine) -> list[tuple[int, str | None]]:
    return [(bad["line"], bad["column"]) for bad in quarantine.sample]


def test_text_that_looks_like_a_missing_marker_is_kept_and_only_numbers_take_the_markers():
    rows, quarantine = read(b"name,n\nNA,NA\nnull,3\nN/A,null\n,\n")
    assert rows == [{"name": "NA", "n": None}, {"name": "null", "n": 3}, {"name": "N/A", "n": None},
                    {"name": None, "n": None}]  # fmt: skip
    assert quarantine.count == 0


@pytest.mark.parametrize(
    "chunks",
    [
        [b"name,n\na,1\n\n\nb,x\n"],
        [b"name,n\na,1\n", b"\n", b"\n", b"b,x\n"],  # blank lines across the GET's chunks
        [b"name,n\r\na,1\r", b"\n\r", b"\n\r\nb,x\r\n"],  # CRLF, a line break split between chunks
    ],
)
def test_blank_lines_count_as_lines_when_a_row_is_named_by_its_line(chunks):
    rows, quarantine = read(*chunks)
    assert rows == [{"name": "a", "n": 1}]
    assert lines(quarantine) == [(5, "n")]


def test_text_that_is_not_utf8_is_a_bad_row_of_its_own_column():
    rows, quarantine = read(b"name,n\na,1\n\xff\xfe,2\nc,3\n")
    assert rows == [{"name": "a", "n": 1}, {"name": "c", "n": 3}]
    assert quarantine.sample == [{"line": 3, "column": "name", "reason": "b'\\xff\\xfe' is not UTF-8 text"}]
    with pytest.raises(MalformedRow, match="line 3, column 'name'") as failed:
        read(b"name,n\na,1\n\xff\xfe,2\n", mode=BadRows.fail)
    assert failed.value.field == "name"


def test_a_row_bad_in_two_columns_is_one_row_set_aside_with_both_reasons():
    rows, quarantine = read(b"name,n\n\xff,x\nb,2\nc,y\n")
    assert rows == [{"name": "b", "n": 2}]
    assert quarantine.count == 2  # rows 2 and 4, not three problems
    assert lines(quarantine) == [(2, "name"), (2, "n"), (4, "n")]


def test_a_header_naming_a_read_column_twice_is_refused():
    with pytest.raises(InvalidInput, match="names column 'n' 2 times") as refused:
        read(b"name,n,n\na,1,2\n")
    assert refused.value.field == "distributionId"
    rows, _ = read(b"\xef\xbb\xbfname,n,other,other\na,1,x,y\n")  # a column the export does not read may repeat
    assert rows == [{"name": "a", "n": 1}]
