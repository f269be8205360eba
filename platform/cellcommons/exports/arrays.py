"""Arrow arrays as the export's stages pass them on."""

from __future__ import annotations

import pyarrow as pa


def same_values(first: pa.Array, second: pa.Array) -> bool:
    """Whether two arrays hold the same values: at once when both view the same memory (a row group's dictionary,
    shared by its batches from the reader to the writer), else by comparing them. Arrow's `equals` compares every
    byte even then: some 1.8 MB per batch for 50 000 donors' pseudonyms, at each of four stages."""
    if len(first) != len(second) or first.type != second.type:
        return False
    if first.offset == second.offset and _addresses(first) == _addresses(second):
        return True
    return first.equals(second)


def _addresses(array: pa.Array) -> list[int | None]:
    return [None if buffer is None else buffer.address for buffer in array.buffers()]
