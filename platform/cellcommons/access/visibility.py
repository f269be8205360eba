"""The policy's visibility rules as SQL, so the database filters every SELECT (never fetch, then filter).

Each `visible_*(principal, entity)` returns a boolean expression over `entity` (the mapped class, or an alias
of it) to put in a query's WHERE; related tables are reached through EXISTS on fresh aliases, so the
expression means the same inside any query. These mirror `policy.visible` rule for rule; the tests check that
both agree on every seeded row. `get_visible` loads one row or raises the same NotFound for missing and hidden.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence, Set
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, bindparam, exists, false, or_, select, true
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from cellcommons.access.models import AccessRequest, Agreement, RequestedDataset, RequestStatus
from cellcommons.access.policy import (
    AccessRequestRecord,
    AgreementRecord,
    AuditEntry,
    BatchRecord,
    CollectionRecord,
    DatasetVersionRecord,
    DonorRecord,
    InstitutionFacts,
    QcResultRecord,
    Resource,
    SpecificationRecord,
    not_found,
)
from cellcommons.audit.models import AuditEvent
from cellcommons.auth.principal import Principal, Role
from cellcommons.catalogue.enums import AccessRights, VersionStatus
from cellcommons.catalogue.models import (
    Batch,
    Collection,
    Dataset,
    DatasetVersion,
    DataUseCondition,
    Distribution,
    Donor,
    DonorTest,
    Institution,
    QcResult,
    SpecCriterion,
    Specification,
    dataset_version_batch,
)

Visibility = Callable[..., ColumnElement[bool]]
Statement = TypeVar("Statement")  # an Executable, or anything else with `params(values) -> copy`
VIEWER = "viewer_institution_id"
_STANDING = bindparam(VIEWER, type_=UUID)


def standing_in(roles: frozenset[Role]) -> Principal:
    """A principal whose institution is the bound parameter VIEWER. Only for rules that read nothing of the
    principal but its institution and roles (the catalogue's), never for audit events or access requests."""
    return Principal(institution_id=_STANDING, institution_slug="", subject="", roles=roles)


def per_viewer(build: Callable[..., Statement] | None = None, /, *, kept: int | None = None) -> Any:
    """`build(principal, *args)` built once per set of roles (and once for anonymous callers), the caller's
    institution bound to the copy each call returns: building the policy's SQL, and SQLAlchemy's cache key for
    it, costs more CPU than the database spends running it. `args` must be hashable; `kept` bounds the cache
    (least recently used first out) where they come from clients.

    Use as `@per_viewer` or `@per_viewer(kept=N)`."""
    if build is None:
        return functools.partial(per_viewer, kept=kept)

    @functools.lru_cache(maxsize=kept)
    def template(roles: frozenset[Role] | None, *args: Any) -> Statement:
        return build(None if roles is None else standing_in(roles), *args)

    @functools.wraps(build)
    def statement(principal: Principal | None, *args: Any) -> Statement:
        if principal is None:
            return template(None, *args)
        built = template(principal.roles, *args)
        # A principal standing in (another template being built around this one) leaves the parameter unbound.
        return built if principal.institution_id is _STANDING else built.params({VIEWER: principal.institution_id})

    return statement


def _signed_in(principal: Principal | None, entity: Any = None) -> ColumnElement[bool]:
    return true() if principal is not None else false()


def visible_institutions(principal: Principal | None, institution: Any = Institution) -> ColumnElement[bool]:
    return _signed_in(principal)


def visible_specifications(principal: Principal | None, specification: Any = Specification) -> ColumnElement[bool]:
    return _signed_in(principal)


def _members_only(principal: Principal | None, entity: Any) -> ColumnElement[bool]:
    if principal is None:
        return false()
    return entity.institution_id == principal.institution_id


def visible_donors(principal: Principal | None, donor: Any = Donor) -> ColumnElement[bool]:
    return _members_only(principal, donor)


def visible_collections(principal: Principal | None, collection: Any = Collection) -> ColumnElement[bool]:
    return _members_only(principal, collection)


def _shared_version(version: Any) -> ColumnElement[bool]:
    """`DatasetVersionRecord.shared`: published and not non_public."""
    return and_(version.status == VersionStatus.published, version.access_rights != AccessRights.non_public)


def visible_dataset_versions(
    principal: Principal | None, version: Any = DatasetVersion, dataset: Any = None
) -> ColumnElement[bool]:
    """`dataset`: the version's dataset where the query already joins it; the custodian is then read from that
    row instead of a correlated EXISTS, which the planner can only check row by row."""
    if principal is None:
        return false()
    if dataset is not None:
        return or_(_shared_version(version), dataset.institution_id == principal.institution_id)
    custodian = aliased(Dataset)
    owned = exists().where(custodian.id == version.dataset_id, custodian.institution_id == principal.institution_id)
    return or_(_shared_version(version), owned)


def visible_datasets(principal: Principal | None, dataset: Any = Dataset) -> ColumnElement[bool]:
    """A dataset (its accession) is visible when one of its versions is."""
    if principal is None:
        return false()
    version = aliased(DatasetVersion)
    shared = exists().where(version.dataset_id == dataset.id, _shared_version(version))
    return or_(dataset.institution_id == principal.institution_id, shared)


def visible_batches(principal: Principal | None, batch: Any = Batch) -> ColumnElement[bool]:
    """`BatchRecord.shared`: unless every dataset version linking the batch is non_public."""
    if principal is None:
        return false()
    link = dataset_version_batch.alias()
    version = aliased(DatasetVersion)
    linked = exists().where(link.c.batch_id == batch.id)
    shared_link = exists().where(
        link.c.batch_id == batch.id,
        version.id == link.c.dataset_version_id,
        version.access_rights != AccessRights.non_public,
    )
    return or_(batch.institution_id == principal.institution_id, ~linked, shared_link)


def visible_audit_events(principal: Principal | None, event: Any = AuditEvent) -> ColumnElement[bool]:
    if principal is None:
        return false()
    # As `policy.visible`: a subject is unique within its issuer only, so one's own actions are those recorded under
    # one's institution; a steward sees all of them.
    in_institution = event.institution == principal.institution_slug
    return in_institution if principal.has(Role.steward) else and_(in_institution, event.actor == principal.actor)


def visible_access_requests(principal: Principal | None, request: Any = AccessRequest) -> ColumnElement[bool]:
    """`AccessRequestRecord`: the requester's own; submitted ones naming a dataset of a steward's institution."""
    if principal is None:
        return false()
    own = and_(request.requester_institution_id == principal.institution_id, request.requester_actor == principal.actor)
    if not principal.has(Role.steward):
        return own
    part = aliased(RequestedDataset)
    custodian = exists().where(part.request_id == request.id, part.provider_institution_id == principal.institution_id)
    return or_(own, and_(request.status != RequestStatus.draft, custodian))


def visible_agreements(principal: Principal | None, agreement: Any = Agreement) -> ColumnElement[bool]:
    """`AgreementRecord`: members of either party."""
    if principal is None:
        return false()
    return or_(
        agreement.provider_institution_id == principal.institution_id,
        agreement.recipient_institution_id == principal.institution_id,
    )


def visible_sync_sources(principal: Principal | None, source: Any) -> ColumnElement[bool]:
    """A sync source (configuration, runs, quarantine): its institution's stewards and institution admins only;
    to everyone else it does not exist."""
    if principal is None or not (principal.has(Role.steward) or principal.has(Role.institution_admin)):
        return false()
    return source.institution_id == principal.institution_id


def _via(principal: Principal | None, parent_model: type, parent_id: Any, rule: Visibility) -> ColumnElement[bool]:
    """A part is seen with the record it belongs to."""
    if principal is None:
        return false()
    parent = aliased(parent_model)
    return exists().where(parent.id == parent_id, rule(principal, parent))


def visible_qc_results(principal: Principal | None, qc_result: Any = QcResult) -> ColumnElement[bool]:
    return _via(principal, Batch, qc_result.batch_id, visible_batches)


def visible_distributions(principal: Principal | None, distribution: Any = Distribution) -> ColumnElement[bool]:
    """A file's name, size and checksum are dataset metadata; its contents are `downloadable_dataset_versions`."""
    return _via(principal, DatasetVersion, distribution.dataset_version_id, visible_dataset_versions)


def visible_spec_criteria(principal: Principal | None, criterion: Any = SpecCriterion) -> ColumnElement[bool]:
    return _via(principal, Specification, criterion.specification_id, visible_specifications)


def visible_donor_tests(principal: Principal | None, test: Any = DonorTest) -> ColumnElement[bool]:
    return _via(principal, Donor, test.donor_id, visible_donors)


def visible_conditions(principal: Principal | None, condition: Any = DataUseCondition) -> ColumnElement[bool]:
    """A data-use condition belongs to a dataset version or to a donor's consent."""
    return or_(
        _via(principal, DatasetVersion, condition.dataset_version_id, visible_dataset_versions),
        _via(principal, Donor, condition.donor_id, visible_donors),
    )


def downloadable_dataset_versions(
    principal: Principal | None, covered: Set[uuid.UUID], version: Any = DatasetVersion
) -> ColumnElement[bool]:
    """`policy.can(…, Action.download, …)` as SQL; `covered`: the versions the principal's active DUAs cover."""
    if principal is None:
        return false()
    by_role = false()
    if principal.has(Role.steward) or principal.has(Role.submitter):
        custodian = aliased(Dataset)
        by_role = exists().where(
            custodian.id == version.dataset_id, custodian.institution_id == principal.institution_id
        )
    by_dua = version.id.in_(list(covered)) if covered else false()
    return and_(visible_dataset_versions(principal, version), or_(by_role, by_dua))


# Every model the platform shows, with its rule and the label its NotFound names.
VISIBLE: dict[type, Visibility] = {
    Institution: visible_institutions,
    Specification: visible_specifications,
    SpecCriterion: visible_spec_criteria,
    Dataset: visible_datasets,
    DatasetVersion: visible_dataset_versions,
    Distribution: visible_distributions,
    DataUseCondition: visible_conditions,
    Batch: visible_batches,
    QcResult: visible_qc_results,
    Donor: visible_donors,
    DonorTest: visible_donor_tests,
    Collection: visible_collections,
    AuditEvent: visible_audit_events,
    AccessRequest: visible_access_requests,
    Agreement: visible_agreements,
}
LABELS: dict[type, str] = {
    Institution: InstitutionFacts.label,
    Specification: SpecificationRecord.label,
    SpecCriterion: "specification criterion",
    Dataset: "dataset",
    DatasetVersion: DatasetVersionRecord.label,
    Distribution: "distribution",
    DataUseCondition: "data-use condition",
    Batch: BatchRecord.label,
    QcResult: QcResultRecord.label,
    Donor: DonorRecord.label,
    DonorTest: "donor test",
    Collection: CollectionRecord.label,
    AuditEvent: AuditEntry.label,
    AccessRequest: AccessRequestRecord.label,
    Agreement: AgreementRecord.label,
}


async def get_visible(
    session: AsyncSession, principal: Principal | None, model: type, id: object, *, options: Sequence = ()
) -> Any:
    """The row, or NotFound — the same error from the same single query whether it is missing or hidden."""
    row = await session.scalar(select(model).where(model.id == id, VISIBLE[model](principal)).options(*options))
    if row is None:
        raise not_found(LABELS[model], id)
    return row


# ---- describing rows for `policy.can` / `policy.require` ---------------------------------------------------


async def linked_access_rights(session: AsyncSession, batch_id: uuid.UUID) -> frozenset[AccessRights]:
    rows = await session.scalars(
        select(DatasetVersion.access_rights)
        .join(dataset_version_batch, dataset_version_batch.c.dataset_version_id == DatasetVersion.id)
        .where(dataset_version_batch.c.batch_id == batch_id)
        .distinct()
    )
    return frozenset(rows)


async def describe(
    session: AsyncSession, row: object, *, node_id: str, covered: Set[uuid.UUID] = frozenset()
) -> Resource:
    """The policy's view of a row the caller holds. `node_id`: this node (`settings.node_id`), to tell harvested
    copies; `covered`: the dataset versions the principal's active DUAs cover."""
    match row:
        case Institution():
            return InstitutionFacts(institution_id=row.id, harvested=row.origin_node != node_id, key=row.id)
        case DatasetVersion():
            dataset = await session.get_one(Dataset, row.dataset_id)
            return DatasetVersionRecord(
                institution_id=dataset.institution_id,
                harvested=dataset.origin_node != node_id,
                key=row.id,
                access_rights=row.access_rights,
                published=row.status is VersionStatus.published,
                covered_by_active_dua=row.id in covered,
            )
        case Batch():
            return BatchRecord(**await _batch_facts(session, row, node_id), key=row.id)
        case QcResult():
            batch = await session.get_one(Batch, row.batch_id)
            return QcResultRecord(**await _batch_facts(session, batch, node_id), key=row.id)
        case AuditEvent():
            return AuditEntry(actor=row.actor, institution=row.institution, key=row.id)
    kind = _RECORD_KINDS[type(row)]
    return kind(institution_id=row.institution_id, harvested=row.origin_node != node_id, key=row.id)


_RECORD_KINDS: dict[type, type] = {Specification: SpecificationRecord, Donor: DonorRecord, Collection: CollectionRecord}


async def _batch_facts(session: AsyncSession, batch: Batch, node_id: str) -> dict[str, Any]:
    return dict(
        institution_id=batch.institution_id,
        harvested=batch.origin_node != node_id,
        linked_access_rights=await linked_access_rights(session, batch.id),
    )
