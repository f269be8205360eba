"""The access policy: who may see and do what (DESIGN.md, "Who may see and do what"). One module decides.

`can()` and `require()` judge one action on one described resource; `access.visibility` states the same
visibility rules as SQL, so every SELECT filters in the database (tests check the two agree row by row).
Judging is two questions, in order: may the principal *see* the resource at all (if not, it answers exactly as
if it did not exist: `NotFound`), and may it do the action (if not: `Forbidden`).

Decisions where the design table is silent:
- `reader` is every signed-in principal, so seeing needs membership only; acting needs the role named.
  Roles do not imply each other (a steward is not a submitter).
- Other institutions see published dataset versions only: drafts stay with their institution.
- A `non_public` version is never shared, and a DUA does not reveal it (such versions cannot be requested).
- Files of every dataset, `public` ones included, need an active DUA outside the owning institution, as the
  table says; if `public` should mean open download, change `_may_download`.
- Harvested copies are read-only here: no create, update or publish, and no access decisions or DUA terms
  (their origin node decides). Issuer and client registrations are this node's own, so they are not copies.
- `platform_admin` onboards institutions (create and update their public facts) and manages any institution's
  issuers and machine clients. Otherwise it has what its own membership gives: nothing about data contents,
  no audit events beyond its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from cellcommons.auth.principal import Principal, Role
from cellcommons.catalogue.enums import AccessRights
from cellcommons.errors import Forbidden, NotFound


class Action(StrEnum):
    view = "view"
    create = "create"
    update = "update"
    publish = "publish"
    download = "download"  # file contents, presigned downloads and exports
    decide_access_request = "decide_access_request"
    set_dua_terms = "set_dua_terms"
    manage_issuers = "manage_issuers"
    manage_clients = "manage_clients"


# ---- resources: what the policy needs to know about a record ----------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Owned:
    """A record of one institution. `key` is how the caller named it (id, accession, lot): it goes into the
    NotFound message, which must read the same whether the record is missing or hidden."""

    label = "record"

    institution_id: uuid.UUID
    harvested: bool = False  # a read-only copy from another node (`origin_node != settings.node_id`)
    key: object = None

    def shared(self) -> bool:
        """Whether members of other institutions may see it; by default only the owner's members may."""
        return False


@dataclass(frozen=True, kw_only=True)
class InstitutionFacts(Owned):
    """An institution's public facts; also the subject of its issuers and machine clients."""

    label = "institution"

    def shared(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class SpecificationRecord(Owned):
    label = "specification"

    def shared(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class DatasetVersionRecord(Owned):
    """A dataset version's metadata (and its files' names, sizes, checksums); `download` is about its contents.

    `covered_by_active_dua`: whether an active DUA naming the principal covers this version (DUAs are decided
    elsewhere; the caller says)."""

    label = "dataset version"

    access_rights: AccessRights
    published: bool
    covered_by_active_dua: bool = False

    def shared(self) -> bool:
        return self.published and self.access_rights is not AccessRights.non_public


@dataclass(frozen=True, kw_only=True)
class BatchRecord(Owned):
    """A batch, with the access rights of every dataset version linking it (any status)."""

    label = "batch"

    linked_access_rights: frozenset[AccessRights] = frozenset()

    def shared(self) -> bool:
        # Hidden only when every link is non_public (it would reveal those datasets); unlinked batches are shared.
        return self.linked_access_rights != {AccessRights.non_public}


@dataclass(frozen=True, kw_only=True)
class QcResultRecord(BatchRecord):
    """A QC result is seen with its batch; describe it with its batch's links."""

    label = "QC result"


@dataclass(frozen=True, kw_only=True)
class DonorRecord(Owned):
    label = "donor"


@dataclass(frozen=True, kw_only=True)
class CollectionRecord(Owned):
    label = "collection"


@dataclass(frozen=True, kw_only=True)
class AccessRequestRecord(Owned):
    """One custodian's share of an access request: `institution_id` is the custodian that decides it. The
    requester sees and edits the request; the custodian's stewards see it once it is submitted."""

    label = "access request"

    requester_institution_id: uuid.UUID
    requester_actor: str
    submitted: bool

    def requested_by(self, principal: Principal) -> bool:
        return principal.institution_id == self.requester_institution_id and principal.actor == self.requester_actor


@dataclass(frozen=True, kw_only=True)
class AgreementRecord(Owned):
    """A data-use agreement: `institution_id` is the provider; both parties' members see it."""

    label = "data-use agreement"

    recipient_institution_id: uuid.UUID


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    """An audit event: `actor` as `Principal.actor` names it, `institution` the slug it was recorded under."""

    label = "audit event"

    actor: str
    institution: str | None
    key: object = None


Resource = Owned | AuditEntry


# ---- the rules ------------------------------------------------------------------------------------------

Rule = Callable[[Principal, Resource], bool]


def _member(principal: Principal, resource: Owned) -> bool:
    return principal.institution_id == resource.institution_id


def visible(principal: Principal | None, resource: Resource) -> bool:
    """May the principal see the resource at all? Anonymous sees nothing."""
    if principal is None:
        return False
    if isinstance(resource, AuditEntry):
        # Everyone sees their own actions; stewards (their institution's DAC) see all of their institution's.
        # A subject is unique within its issuer only, so one's own actions are those under one's institution.
        in_institution = resource.institution == principal.institution_slug
        return in_institution and (resource.actor == principal.actor or principal.has(Role.steward))
    if isinstance(resource, AccessRequestRecord):
        deciding = _member(principal, resource) and principal.has(Role.steward) and resource.submitted
        return resource.requested_by(principal) or deciding
    if isinstance(resource, AgreementRecord):
        return _member(principal, resource) or principal.institution_id == resource.recipient_institution_id
    return _member(principal, resource) or resource.shared()


def _anyone(principal: Principal, resource: Resource) -> bool:
    return True


def _owner_with(*roles: Role) -> Rule:
    def rule(principal: Principal, resource: Owned) -> bool:
        return _member(principal, resource) and any(principal.has(r) for r in roles)

    return rule


def _local(rule: Rule) -> Rule:
    """Harvested copies are read-only: only their origin node changes them."""

    def local_rule(principal: Principal, resource: Owned) -> bool:
        return not resource.harvested and rule(principal, resource)

    return local_rule


def _platform_admin(principal: Principal, resource: Resource) -> bool:
    return principal.has(Role.platform_admin)


def _identity_admin(principal: Principal, resource: Owned) -> bool:
    return _platform_admin(principal, resource) or _owner_with(Role.institution_admin)(principal, resource)


def _requester(principal: Principal, resource: AccessRequestRecord) -> bool:
    return resource.requested_by(principal)


def _may_download(principal: Principal, resource: DatasetVersionRecord) -> bool:
    return _owner_with(Role.steward, Role.submitter)(principal, resource) or resource.covered_by_active_dua


_RESOURCES: tuple[type, ...] = (
    InstitutionFacts,
    SpecificationRecord,
    DatasetVersionRecord,
    BatchRecord,
    QcResultRecord,
    DonorRecord,
    CollectionRecord,
    AccessRequestRecord,
    AgreementRecord,
    AuditEntry,
)
_RECORDS = (SpecificationRecord, DatasetVersionRecord, BatchRecord, QcResultRecord, DonorRecord, CollectionRecord)
_submitter = _local(_owner_with(Role.submitter))
_steward = _local(_owner_with(Role.steward))

# (action, resource type) → who may, once the resource is visible. A pair not listed is never allowed.
RULES: dict[tuple[Action, type], Rule] = {
    **{(Action.view, kind): _anyone for kind in _RESOURCES},
    **{(action, kind): _submitter for action in (Action.create, Action.update) for kind in _RECORDS},
    (Action.publish, DatasetVersionRecord): _submitter,
    (Action.download, DatasetVersionRecord): _may_download,
    (Action.decide_access_request, DatasetVersionRecord): _steward,
    (Action.set_dua_terms, DatasetVersionRecord): _steward,
    (Action.update, AccessRequestRecord): _requester,  # edit, submit, withdraw
    (Action.decide_access_request, AccessRequestRecord): _steward,  # approve, reject, ask for clarification
    (Action.set_dua_terms, AgreementRecord): _steward,  # revoke
    (Action.create, InstitutionFacts): _local(_platform_admin),
    (Action.update, InstitutionFacts): _local(_identity_admin),
    (Action.manage_issuers, InstitutionFacts): _identity_admin,
    (Action.manage_clients, InstitutionFacts): _identity_admin,
}


def _never(principal: Principal, resource: Resource) -> bool:
    return False


def can(principal: Principal | None, action: Action, resource: Resource) -> bool:
    if not visible(principal, resource):
        return False
    return RULES.get((action, type(resource)), _never)(principal, resource)


def not_found(label: str, key: object) -> NotFound:
    """The one NotFound for a record that is missing or hidden: both read exactly alike."""
    return NotFound(f"no {label} {key}", field="id")


_CHANGES = {Action.create, Action.update, Action.publish}  # what a harvested copy refuses, whoever asks


def require(principal: Principal | None, action: Action, resource: Resource) -> None:
    """Raise NotFound if the principal may not even see the resource, Forbidden if it may see but not act."""
    if not visible(principal, resource):
        raise not_found(resource.label, resource.key)
    if not can(principal, action, resource):
        if getattr(resource, "harvested", False) and action in _CHANGES:
            raise Forbidden(f"this {resource.label} is a read-only copy harvested from another node; only its origin "
                            "node changes it")  # fmt: skip
        raise Forbidden(f"you may not {action.value.replace('_', ' ')} this {resource.label}")
