"""ORCID iDs: sixteen characters in four groups, the last an ISO 7064 MOD 11-2 check character
(https://support.orcid.org/hc/en-us/articles/360006897674). Identity providers send them bare or as the
https://orcid.org/ URI; the platform keeps the bare form."""

from __future__ import annotations

import re

_ORCID = re.compile(r"(?:https?://orcid\.org/)?(\d{4}-\d{4}-\d{4}-\d{3}[\dX])", re.IGNORECASE)


def check_character(digits: str) -> str:
    """The MOD 11-2 check character of the first fifteen digits."""
    total = 0
    for digit in digits:
        total = (total + int(digit)) * 2
    result = (12 - total % 11) % 11
    return "X" if result == 10 else str(result)


def canonical_orcid(value: object) -> str | None:
    """The bare ORCID iD in `value` (bare or as its URI), or None when it is not a well-formed one."""
    if not isinstance(value, str) or not (found := _ORCID.fullmatch(value.strip())):
        return None
    orcid = found[1].upper()  # a check character typed as x
    digits = orcid.replace("-", "")
    return orcid if check_character(digits[:15]) == digits[15] else None
