"""Donation identifiers (DOMAIN.md rules 7 and 8): the ISBT 128 DIN and the EU Single European Code.

Each identifier is a fixed sequence of segments; one table per identifier drives both the checks and their
messages. Problems carry a stable code (`din_check_character`, `sec_product_expiry` …) for findings.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

# ISO 7064 MOD 37-2 alphabet: a character's value is its position.
_MOD37_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"
_FACILITY = re.compile(r"[A-NP-Z1-9][0-9]{4}")


@dataclass(frozen=True)
class IdentifierProblem:
    code: str
    message: str


@dataclass(frozen=True)
class Segment:
    name: str  # the code suffix: `din_facility`
    title: str  # how the message names it
    length: int
    pattern: re.Pattern[str]
    expected: str  # what the segment should look like, for the message
    valid: Callable[[str], bool] = lambda _: True  # a check beyond the pattern (a real date)


@dataclass(frozen=True)
class IdentifierFormat:
    kind: str  # the code prefix: `din`, `sec_donation`
    title: str
    segments: tuple[Segment, ...]

    @property
    def length(self) -> int:
        return sum(segment.length for segment in self.segments)


def _is_expiry(text: str) -> bool:
    # 00000000 means "no expiry date" in the SEC.
    if text == "00000000":
        return True
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return False
    return True


def _alnum(length: int) -> re.Pattern[str]:
    return re.compile(rf"[A-Z0-9]{{{length}}}")


def _digits(length: int) -> re.Pattern[str]:
    return re.compile(rf"[0-9]{{{length}}}")


# The 13 characters of a DIN before its check character.
DIN = IdentifierFormat(
    "din",
    "ISBT 128 DIN",
    (
        Segment("facility", "facility code", 5, _FACILITY, "one of A–N, P–Z, 1–9 followed by 4 digits"),
        Segment("year", "year", 2, _digits(2), "2 digits"),
        Segment("sequence", "sequence number", 6, _digits(6), "6 digits"),
    ),
)
SEC_DONATION = IdentifierFormat(
    "sec_donation",
    "SEC donation identification sequence",
    (
        Segment("country", "country code", 2, re.compile(r"[A-Z]{2}"), "2 letters (ISO 3166-1)"),
        Segment("establishment", "tissue establishment code", 6, _alnum(6), "6 letters or digits"),
        Segment("number", "unique donation number", 13, _alnum(13), "13 letters or digits"),
    ),
)
SEC_PRODUCT = IdentifierFormat(
    "sec_product",
    "SEC product identification sequence",
    (
        Segment("coding_system", "coding system", 1, re.compile(r"[EAB]"), "E (EUTC), A (ISBT 128) or B (Eurocode)"),
        Segment("code", "product code", 7, _alnum(7), "7 letters or digits"),
        Segment("split", "split number", 3, _alnum(3), "3 letters or digits"),
        Segment("expiry", "expiry date", 8, _digits(8), "a real date YYYYMMDD or 00000000", _is_expiry),
    ),
)


def _format_problems(fmt: IdentifierFormat, value: str, length: int) -> list[IdentifierProblem]:
    """Length, case and segment problems of `value` against `fmt` (with `length` counting any check character)."""
    if len(value) != length:
        return [
            IdentifierProblem(
                f"{fmt.kind}_length",
                f"{fmt.title} {value!r} has {len(value)} characters; it must have {length}",
            )
        ]
    # Reported rather than upper-cased: a lower-case identifier did not come from a label scan.
    if value != value.upper():
        return [IdentifierProblem(f"{fmt.kind}_lowercase", f"{fmt.title} {value!r} contains lower-case letters")]
    problems = []
    start = 0
    for segment in fmt.segments:
        part = value[start : start + segment.length]
        start += segment.length
        if not segment.pattern.fullmatch(part) or not segment.valid(part):
            problems.append(
                IdentifierProblem(
                    f"{fmt.kind}_{segment.name}",
                    f"{fmt.title} {value!r}: {segment.title} {part!r} must be {segment.expected}",
                )
            )
    return problems


def din_check_character(first13: str) -> str:
    """The ISO 7064 MOD 37-2 check character over the first 13 characters of a DIN."""
    checksum = 0
    for character in first13:
        position = _MOD37_ALPHABET.find(character)
        if position < 0:
            raise ValueError(f"{character!r} is not in the ISO 7064 MOD 37-2 character set (0–9, A–Z, *)")
        checksum = (checksum + position) * 2 % 37
    return _MOD37_ALPHABET[(38 - checksum) % 37]


def make_din(facility: str, year: int, sequence: int) -> str:
    """A full DIN (with check character); `year` may be two-digit or a calendar year (its last two digits)."""
    if not _FACILITY.fullmatch(facility):
        raise ValueError(f"ISBT 128 facility code {facility!r} must be {DIN.segments[0].expected}")
    if year < 0:
        raise ValueError(f"DIN year {year} must not be negative")
    if not 0 <= sequence <= 999_999:
        raise ValueError(f"DIN sequence number {sequence} must be within 0–999999")
    first13 = f"{facility}{year % 100:02d}{sequence:06d}"
    return first13 + din_check_character(first13)


def din_issues(value: str) -> list[IdentifierProblem]:
    problems = _format_problems(DIN, value, DIN.length + 1)
    if problems:
        return problems
    expected = din_check_character(value[:-1])
    if value[-1] != expected:
        return [
            IdentifierProblem(
                "din_check_character",
                f"ISBT 128 DIN {value!r} has check character {value[-1]!r}; "
                f"ISO 7064 MOD 37-2 over {value[:-1]!r} gives {expected!r}",
            )
        ]
    return []


def sec_donation_issues(value: str) -> list[IdentifierProblem]:
    return _format_problems(SEC_DONATION, value, SEC_DONATION.length)


def sec_product_issues(value: str) -> list[IdentifierProblem]:
    return _format_problems(SEC_PRODUCT, value, SEC_PRODUCT.length)


def din_problems(value: str) -> list[str]:
    return [problem.message for problem in din_issues(value)]


def sec_donation_problems(value: str) -> list[str]:
    return [problem.message for problem in sec_donation_issues(value)]


def sec_product_problems(value: str) -> list[str]:
    return [problem.message for problem in sec_product_issues(value)]
