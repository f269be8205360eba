"""Comparing arrays the export's stages pass on: views of the same memory are the same at once; others are
compared by value (equal values elsewhere in memory, a slice, another type are told apart correctly)."""

from __future__ import annotations

import pyarrow as pa

from cellcommons.exports.arrays import same_values


def test_views_of_the_same_memory_and_equal_copies_are_the_same_values():
    names = pa.array(["p-a", "p-b", None])
    view = pa.DictionaryArray.from_arrays(pa.array([0, 1]), names).dictionary  # another wrapper of `names`
    assert same_values(names, view)
    assert same_values(names, pa.array(["p-a", "p-b", None]))  # a copy: compared


def test_different_values_lengths_offsets_and_types_are_told_apart():
    names = pa.array(["p-a", "p-b", "p-c"])
    assert not same_values(names, pa.array(["p-a", "p-b", "p-x"]))
    assert not same_values(names, names.slice(0, 2))
    assert not same_values(names.slice(1), names.slice(0, 2))  # same memory, other rows
    assert same_values(names.slice(1), pa.array(["p-b", "p-c"]))
    assert not same_values(pa.array([1, 2], pa.int32()), pa.array([1, 2], pa.int64()))


def test_empty_arrays_with_and_without_a_validity_buffer_are_the_same_values():
    """Arrow gives an empty array a 0-byte validity buffer or none, by how it was made (`take` or the reader)."""
    made = pa.array([], pa.string())
    taken = pa.array(["x"]).take(pa.array([], pa.int32()))
    assert same_values(made, taken) and same_values(taken, made)
