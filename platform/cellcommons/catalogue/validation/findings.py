"""Building findings, and turning pydantic's shape errors into the same shape of answer."""

from __future__ import annotations

from collections.abc import Sequence

import pydantic

from cellcommons.catalogue.enums import Severity
from cellcommons.catalogue.schemas import Finding

_MAX_SHOWN_INPUT = 80


def error(code: str, field: str, message: str) -> Finding:
    return Finding(code=code, severity=Severity.error, field=field, message=message)


def warning(code: str, field: str, message: str) -> Finding:
    return Finding(code=code, severity=Severity.warning, field=field, message=message)


def field_path(prefix: str, loc: Sequence[str | int]) -> str:
    """`("qc_results", 2, "value")` under `rows[3]` → `rows[3].qc_results[2].value`."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN_INPUT else text[: _MAX_SHOWN_INPUT - 1] + "…"


def findings_from_validation_error(exc: pydantic.ValidationError, prefix: str = "") -> list[Finding]:
    findings = []
    for problem in exc.errors(include_url=False):
        field = field_path(prefix, problem["loc"])
        if problem["type"] == "missing":
            findings.append(error("missing", field, f"{field or 'input'} is required"))
        else:
            message = f"{field or 'input'}: {problem['msg']} (got {_shown(problem.get('input'))})"
            findings.append(error("invalid_value", field, message))
    return findings
