"""The demo users every dev issuer knows, and how each issuer expresses their roles.

Partner identity providers do not agree on where roles live: most send a `groups` claim, Keycloak realms send
`realm_access.roles`. The dev issuers do both (chosen per issuer) with claim values that differ from the
platform's role names, so the platform's per-issuer claim-path → role mapping is exercised, not bypassed.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from cellcommons.auth.orcid import check_character
from cellcommons.auth.principal import Role

# Issuers that speak Keycloak (`realm_access.roles`); every other issuer sends `groups`.
REALM_ROLES_ISSUERS = frozenset({"lowlands-regmed"})

_GROUPS = {
    Role.reader: "cellcommons-reader",
    Role.submitter: "cellcommons-submitter",
    Role.steward: "cellcommons-steward",
    Role.institution_admin: "cellcommons-institution-admin",
}
_REALM_ROLES = {
    Role.reader: "cc_reader",
    Role.submitter: "cc_submitter",
    Role.steward: "cc_dac_member",
    Role.institution_admin: "cc_admin",
}
# Claim values a real directory sends that mean nothing to the platform; they must be ignored, not refused.
_UNRELATED_GROUPS = ("staff",)
_UNRELATED_REALM_ROLES = ("offline_access", "uma_authorization")

_SUBJECT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:cellcommons:dev-idp")


@dataclass(frozen=True)
class DemoUser:
    username: str
    name: str
    roles: tuple[Role, ...]


# Everyone who may sign in is a reader; `gus` is a member of staff with no platform role at all.
DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("alice", "Alice Reader", (Role.reader,)),
    DemoUser("sam", "Sam Submitter", (Role.reader, Role.submitter)),
    DemoUser("stella", "Stella Steward", (Role.reader, Role.steward)),
    DemoUser("ian", "Ian Institution-Admin", (Role.reader, Role.institution_admin)),
    DemoUser("gus", "Gus Guest", ()),
)
_BY_USERNAME = {u.username: u for u in DEMO_USERS}


def demo_user(username: str) -> DemoUser:
    try:
        return _BY_USERNAME[username]
    except KeyError:
        raise KeyError(f"no demo user {username!r}; known: {', '.join(_BY_USERNAME)}") from None


# Where every dev issuer puts a person's ORCID iD, as its URI (as eduPersonOrcid does); registered as the issuers'
# ORCID claim, so the platform takes the ORCID from the sign-in rather than from what a person types.
ORCID_CLAIM = "orcid"


def orcid(slug: str, username: str) -> str | None:
    """A stable, well-formed ORCID iD for each demo person with a platform role (`gus` has none). Made up in
    0009-99…, a block ORCID has not issued from, so it never names a real researcher."""
    if not demo_user(username).roles:
        return None
    number = int.from_bytes(hashlib.sha256(f"{slug}/{username}".encode()).digest()[:8]) % 10**9
    digits = f"000999{number:09d}"
    digits += check_character(digits)
    return "-".join(digits[i : i + 4] for i in range(0, 16, 4))


def orcid_claims(slug: str, username: str) -> dict[str, Any]:
    found = orcid(slug, username)
    return {ORCID_CLAIM: f"https://orcid.org/{found}"} if found else {}


def subject(slug: str, username: str) -> str:
    """Stable and unique per issuer: the same person name at two institutions is two people."""
    return str(uuid.uuid5(_SUBJECT_NAMESPACE, f"{slug}/{username}"))


@dataclass(frozen=True)
class RoleMapping:
    """What the platform registers for an issuer: where the roles are and what each value means."""

    claim_path: str  # dotted, e.g. "groups" or "realm_access.roles"
    values: dict[str, Role]  # claim value → platform role

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.claim_path.split("."))


def role_mapping(slug: str, realm_roles: bool | None = None) -> RoleMapping:
    """The claim path and value → role mapping to register for the dev issuer `slug`."""
    if realm_roles is None:
        realm_roles = slug in REALM_ROLES_ISSUERS
    if realm_roles:
        return RoleMapping("realm_access.roles", {v: r for r, v in _REALM_ROLES.items()})
    return RoleMapping("groups", {v: r for r, v in _GROUPS.items()})


def role_claims(slug: str, user: DemoUser, realm_roles: bool) -> dict[str, Any]:
    """The claims carrying `user`'s roles as issuer `slug` sends them."""
    if realm_roles:
        values = [_REALM_ROLES[r] for r in user.roles] + [*_UNRELATED_REALM_ROLES, f"default-roles-{slug}"]
        return {"realm_access": {"roles": values}}
    return {"groups": [_GROUPS[r] for r in user.roles] + list(_UNRELATED_GROUPS)}
