"""Mutation results as data: a success payload or one of these error types, in a union per mutation.

A mutation answers its expected failures as typed results instead of top-level errors, so clients branch on
`__typename` and a partial failure never hides in the `errors` array. Each error type carries the domain
error's stable `code`. Finding paths are given in the GraphQL input's own field names (`qcResults[2].unit`),
relative to the mutation's `input` argument; other arguments are named as they are (`idempotencyKey`).
"""

from __future__ import annotations

import re

import strawberry
from strawberry.utils.str_converters import to_camel_case

from cellcommons import errors
from cellcommons.catalogue.enums import Severity
from cellcommons.catalogue.schemas import Finding as FindingIn

_PART = re.compile(r"([^.\[\]]+)|(\[\d+\])")


def graphql_path(path: str | None) -> str | None:
    """`qc_results[2].unit` → `qcResults[2].unit`."""
    if not path:
        return path
    return ".".join(
        "".join(to_camel_case(name) if name else index for name, index in _PART.findall(part))
        for part in path.split(".")
    )


@strawberry.type(description="One problem (or, for stored warnings, one concern) with an input.")
class Finding:
    code: str
    severity: str = strawberry.field(description="error or warning")
    field: str = strawberry.field(description="Path into the mutation's input, in its GraphQL field names")
    message: str

    @classmethod
    def of(cls, finding: FindingIn | dict) -> Finding:
        finding = finding if isinstance(finding, FindingIn) else FindingIn.model_validate(finding)
        field = graphql_path(finding.field) or ""
        message = finding.message.replace(finding.field, field) if finding.field else finding.message
        return cls(code=finding.code, severity=finding.severity.value, field=field, message=message)


@strawberry.type(description="The input breaks the catalogue's rules; nothing was written.")
class ValidationFailed:
    code: str
    message: str
    findings: list[Finding] = strawberry.field(description="Every problem found, not only the first")


@strawberry.type(description="No such record, or one the caller may not see (the two read alike).")
class NotFound:
    code: str
    message: str
    field: str | None


@strawberry.type(description="The caller may see the record but not make this change.")
class Forbidden:
    code: str
    message: str


@strawberry.type(description="The change contradicts a record already in the catalogue; nothing was written.")
class Conflict:
    code: str
    message: str
    field: str | None


ERRORS = (ValidationFailed, NotFound, Forbidden, Conflict)


def error_result(error: errors.CellCommonsError) -> ValidationFailed | NotFound | Forbidden | Conflict:
    """The typed result for a domain error about the request. A bad argument (`InvalidInput`) is a one-finding
    ValidationFailed."""
    match error:
        case errors.ValidationFailed():
            findings = [Finding.of(f) for f in error.findings]
            return ValidationFailed(code=error.code, message=_message(findings), findings=findings)
        case errors.NotFound():
            return NotFound(code=error.code, message=error.message, field=graphql_path(error.field))
        case errors.Forbidden():
            return Forbidden(code=error.code, message=error.message)
        case errors.Conflict():
            return Conflict(code=error.code, message=error.message, field=graphql_path(error.field))
        case errors.InvalidInput():
            field = graphql_path(error.field) or ""
            finding = Finding(code=error.code, severity=Severity.error.value, field=field, message=error.message)
            message = f"{field}: {error.message}"
            return ValidationFailed(code=errors.ValidationFailed.code, message=message, findings=[finding])
    raise error  # not an answer about the input (e.g. Unavailable): a top-level error with its code


def _message(findings: list[Finding]) -> str:
    more = len(findings) - 1
    first = findings[0]
    text = first.message if first.message.startswith(first.field) else f"{first.field}: {first.message}"
    return text + (f" (and {more} more)" if more else "")
