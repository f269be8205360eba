"""Domain errors: a stable code, an HTTP status and a message that names the field and the reason.

The REST and GraphQL layers each render these in one place; services raise them and never build responses.
"""

from __future__ import annotations


class CellCommonsError(Exception):
    code = "error"
    status = 400

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def as_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class InvalidInput(CellCommonsError):
    code = "invalid_input"
    status = 422


class NotFound(CellCommonsError):
    """Also what a caller gets for a record it may not see: hidden answers exactly like missing."""

    code = "not_found"
    status = 404


class Forbidden(CellCommonsError):
    code = "forbidden"
    status = 403


class Conflict(CellCommonsError):
    code = "conflict"
    status = 409


class Unavailable(CellCommonsError):
    """A component the platform depends on (database, object storage, an issuer) cannot be reached."""

    code = "unavailable"
    status = 503


class ValidationFailed(CellCommonsError):
    """Input that breaks the domain rules; `findings` lists every problem (not only the first)."""

    code = "validation_failed"
    status = 422

    def __init__(self, findings: list):
        self.findings = findings
        first = findings[0]
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        super().__init__(f"{first.field}: {first.message}{more}", field=first.field)

    def as_dict(self) -> dict[str, object]:
        return {**super().as_dict(), "findings": [f.model_dump(mode="json") for f in self.findings]}
