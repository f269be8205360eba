"""What can go wrong with an export, each with its own stable code (the job records code, message and field)."""

from __future__ import annotations

from cellcommons.errors import Conflict, InvalidInput


class ColumnForbidden(InvalidInput):
    code = "export_column_forbidden"


class MalformedRow(InvalidInput):
    """A source row that cannot be read: the message names its line and column."""

    code = "malformed_row"


class SourceChanged(Conflict):
    """The source's bytes are not those the distribution records (SHA-256)."""

    code = "source_changed"


class SourceMissing(Conflict):
    """The distribution's file is no longer in object storage."""

    code = "source_missing"


class AgreementNotInForce(Conflict):
    code = "agreement_not_in_force"


class AttemptsExhausted(Conflict):
    code = "attempts_exhausted"
