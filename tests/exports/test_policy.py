"""The policy's vectorised pseudonyms against the one-value reference, across the column memo's limit."""

from __future__ import annotations

import pyarrow as pa

from cellcommons.exports.policy import MEMO_LIMIT, Pseudonymiser, pseudonym

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
