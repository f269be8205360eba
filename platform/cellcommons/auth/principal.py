"""Who is asking: a verified person or machine client of one institution, with platform roles."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    reader = "reader"  # every signed-in researcher
    submitter = "submitter"  # creates and edits the institution's records
    steward = "steward"  # the institution's data access committee
    institution_admin = "institution_admin"  # the institution's issuers and machine clients
    platform_admin = "platform_admin"  # consortium-wide operations


@dataclass(frozen=True)
class Principal:
    """The institution always comes from the issuer registry (or the client registration), never from a claim."""

    institution_id: uuid.UUID
    institution_slug: str
    subject: str
    roles: frozenset[Role] = field(default_factory=frozenset)
    client_id: str | None = None
    token_id: str | None = None
    issuer: str | None = None
    orcid: str | None = None  # vouched for by the institution's issuer (its registered ORCID claim), else None

    @property
    def actor(self) -> str:
        """How the audit log names this principal."""
        return f"client:{self.client_id}" if self.is_machine else f"user:{self.subject}"

    @property
    def is_machine(self) -> bool:
        return self.client_id is not None and self.client_id == self.subject

    def has(self, role: Role) -> bool:
        return role in self.roles
