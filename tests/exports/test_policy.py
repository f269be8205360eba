"""The policy against one-value references: pseudonyms across the column memo's limit, months in a zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from cellcommons.access.schemas import ColumnTreatment
from cellcommons.catalogue.enums import Sensitivity
from cellcommons.errors import InvalidInput
from cellcommons.exports.errors import MalformedRow
from cellcommons.exports.policy import (
    MEMO_LIMIT,
    ColumnPlan,
    PolicyApplier,
    Pseudonymiser,
    band,
    month,
    plan_columns,
    pseudonym,
)

KEY = b"k" * 32


def _donors(start: int, stop: int) -> list[str]:
    return [f"D{i:06d}" for i in range(start, stop)]


def test_every_value_keeps_its_pseudonym_when_the_memo_starts_over():
    name = Pseudonymiser(KEY)
    name(pa.array(_donors(0, MEMO_LIMIT - 10)))  # the memo is nearly full
    # Two known donors, then enough new ones to pass the limit: the memo starts over within this batch.
    values = ["D000000", "D000001", *_donors(MEMO_LIMIT, MEMO_LIMIT + 20), "D000000", None]
    names = name(pa.array(values)).to_pylist()
    assert names == [pseudonym(KEY, v) if v is not None else None for v in values]
    # And after the start over, both the old and the new values still get theirs.
    again = ["D000002", "D000001", f"D{MEMO_LIMIT + 5:06d}"]
    assert name(pa.array(again)).to_pylist() == [pseudonym(KEY, v) for v in again]


def test_a_dictionary_encoded_column_is_named_like_a_plain_one():
    values = pa.array(["D1", "D2", None, "D1"])
    plain = Pseudonymiser(KEY)(values).to_pylist()
    assert plain == [pseudonym(KEY, "D1"), pseudonym(KEY, "D2"), None, pseudonym(KEY, "D1")]
    assert Pseudonymiser(KEY)(values.dictionary_encode()).to_pylist() == plain


def test_a_zoned_timestamp_generalises_to_its_month_in_its_own_zone_at_every_month_boundary():
    """Instants either side of each month's first instant (UTC), in zones east and west of UTC by up to 14 hours
    (and by odd quarters and halves), in every unit: the month is the one on the zone's own calendar."""
    instants = [
        int(datetime(year, month_of_year, 1, tzinfo=UTC).timestamp()) + shift
        for year in (1995, 2024, 2031)
        for month_of_year in range(1, 13)
        for shift in (-14 * 3600 - 1, -11 * 3600, -3601, -1, 0, 1, 3599, 11 * 3600, 14 * 3600 + 1, 20 * 86400)
    ]
    for zone in ("Europe/Amsterdam", "America/St_Johns", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kathmandu"):
        for unit, scale in (("s", 1), ("ms", 10**3), ("us", 10**6), ("ns", 10**9)):
            values = pa.array([*(t * scale for t in instants), None], pa.timestamp(unit, tz=zone))
            expected = [datetime.fromtimestamp(t, ZoneInfo(zone)).date().replace(day=1) for t in instants]
            assert month(values).to_pylist() == [*expected, None], (zone, unit)


@pytest.mark.parametrize("spread", [1, 400], ids=["dates of a few months", "dates over centuries"])
def test_dates_and_zoned_timestamps_go_to_their_month_however_far_apart(spread):
    """Dates close together are looked up by their distance from the earliest (no hashing); dates further apart
    than there are values go through their distinct days. Both give each value its month; nulls stay null."""
    days = [date(1970, 1, 1) + timedelta(days=(i * 37 * spread) % (200 * spread)) for i in range(300)]
    dates = pa.array([*days, None], pa.date32())
    assert month(dates).to_pylist() == [*(d.replace(day=1) for d in days), None]
    zone = ZoneInfo("Pacific/Kiritimati")  # UTC+14: many instants are in the next month there
    instants = [int(datetime(d.year, d.month, d.day, 23, 30, tzinfo=UTC).timestamp()) for d in days]
    zoned = pa.array([*instants, None], pa.timestamp("s", tz="Pacific/Kiritimati"))
    expected = [datetime.fromtimestamp(t, zone).date().replace(day=1) for t in instants]
    assert month(zoned).to_pylist() == [*expected, None]
    assert month(pa.array([None, None], pa.date32())).to_pylist() == [None, None]
    assert month(pa.array([], pa.date32())).to_pylist() == []


def test_numbers_go_to_their_5_year_band_exactly_negative_and_large_ones_too():
    ages = pa.array([43, 40, 44, 45, -3, -5, -6, 0, None, 2**62])
    assert band(ages).to_pylist() == ["40-44", "40-44", "40-44", "45-49", "-5--1", "-5--1", "-10--6", "0-4", None,
                                      "4611686018427387900-4611686018427387904"]  # fmt: skip
    assert band(pa.array([43.7, -0.5, None])).to_pylist() == ["40-44", "-5--1", None]


def test_band_labels_come_as_a_dictionary_of_each_band_once():
    """The writer stores the labels once per row group and each row's index (no hashing of every row's label)."""
    banded = band(pa.array([43, 40, 47, 44, None, 45]))
    assert pa.types.is_dictionary(banded.type)
    assert banded.dictionary.to_pylist() == ["40-44", "45-49"] and banded.indices.to_pylist() == [0, 0, 1, 0, None, 1]


@pytest.mark.parametrize(
    "values", [pa.array([1.0, float("nan")]), pa.array([float("inf")]), pa.array([1e300]), pa.array([2**63 - 2])]
)
def test_a_number_no_band_holds_fails_naming_its_column(values):
    plan = ColumnPlan("score", Sensitivity.quasi_identifier, ColumnTreatment.generalise, values.type)
    with pytest.raises(MalformedRow, match=r"column 'score': .* 5-year band") as failed:
        PolicyApplier([plan], KEY)(pa.record_batch([values], names=["score"]))
    assert failed.value.field == "score"


def test_a_column_declared_twice_makes_the_policy_refuse_the_source():
    declared = [dict(name="full_name", type="string", sensitivity="direct_identifier"),
                dict(name="full_name", type="string", sensitivity="plain")]  # fmt: skip
    with pytest.raises(InvalidInput, match="declares column 'full_name' more than once") as refused:
        plan_columns(declared, {}, None)
    assert refused.value.field == "distributionId"
