"""The arithmetic of multipart uploads, for files above what one presigned PUT carries (5 GiB).

S3's limits: parts of 5 MiB to 5 GiB (the last may be smaller), at most 10,000 parts, objects up to 5 TiB.
The platform fixes the part size when the upload starts, so that each part URL names its byte range, and
the completion must list every part, numbered 1…n, with the ETag object storage answered to its PUT.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cellcommons.errors import InvalidInput

MiB = 1024**2
MIN_PART_BYTES = 5 * MiB
MAX_PART_BYTES = 5 * 1024**3
DEFAULT_PART_BYTES = 64 * MiB
MAX_PARTS = 10_000
MAX_OBJECT_BYTES = 5 * 1024**4
MAX_PARTS_PER_REQUEST = 1_000  # part URLs handed out at once (re-signed on demand: uploadPartUrls)
ETAG = re.compile(r'"?[0-9A-Za-z-]{1,64}"?')


@dataclass(frozen=True)
class Part:
    number: int
    offset: int
    size: int


def part_size_for(size: int, requested: int | None) -> int:
    """The requested part size if S3 allows it for `size`, else the default grown to fit in 10,000 parts."""
    if requested is None:
        needed = math.ceil(size / MAX_PARTS / MiB) * MiB
        return max(DEFAULT_PART_BYTES, needed)
    field = "partSizeBytes"
    if isinstance(requested, bool) or not isinstance(requested, int) or not MIN_PART_BYTES <= requested:
        raise InvalidInput(f"must be a whole number of bytes of at least {MIN_PART_BYTES} (5 MiB)", field=field)
    if requested > MAX_PART_BYTES:
        raise InvalidInput(f"must be at most {MAX_PART_BYTES} bytes (5 GiB)", field=field)
    if math.ceil(size / requested) > MAX_PARTS:
        raise InvalidInput(f"makes more than {MAX_PARTS} parts for this size; choose larger parts", field=field)
    return requested


def part_count(size: int, part_size: int) -> int:
    return max(1, math.ceil(size / part_size))


def parts(size: int, part_size: int, numbers: Iterable[int]) -> list[Part]:
    """The byte ranges of these parts, each number checked against the upload's parts."""
    numbers = list(numbers)
    if len(numbers) > MAX_PARTS_PER_REQUEST:
        raise InvalidInput(f"at most {MAX_PARTS_PER_REQUEST} parts at once", field="partNumbers")
    count, found = part_count(size, part_size), []
    for number in numbers:
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= count:
            raise InvalidInput(f"part numbers run from 1 to {count} for this upload", field="partNumbers")
        offset = (number - 1) * part_size
        found.append(Part(number, offset, min(part_size, size - offset)))
    return found


def completed_parts(listed: list[tuple[int, str]] | None, count: int) -> list[tuple[int, str]]:
    """Every part 1…count exactly once, each with the ETag its PUT answered; in order."""
    if not listed:
        raise InvalidInput("a multipart upload completes with its parts' numbers and ETags", field="parts")
    ordered = sorted(listed, key=lambda part: part[0])
    if [number for number, _ in ordered] != list(range(1, count + 1)):
        raise InvalidInput(f"must list parts 1 to {count}, each once", field="parts")
    if not all(isinstance(etag, str) and ETAG.fullmatch(etag) for _, etag in ordered):
        raise InvalidInput("each part needs the ETag its upload answered", field="parts")
    return ordered
