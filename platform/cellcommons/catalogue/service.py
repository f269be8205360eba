"""Saving catalogue records: validate everything first, then write; errors block, warnings are kept.

Two layers. Each `save_*` takes the owning institution and the node the record originates from: it is how the
platform itself writes (seeding, harvesting), with no principal to judge, and its caller audits its own run.
Each `submit_*` / `publish_dataset` / `delete_record` is how a person or machine client edits its institution's
records: an `Editor` (principal + this node) is judged by the access policy first, the write goes through the
same `save_*`, and an audit event is appended in the same transaction. Both layers log every change of a record
to the change feed (`catalogue.changes`). Everything flushes and never commits: the request, job or sync run
that calls it owns the transaction, so a rejected input leaves nothing half-written.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.access import policy, visibility
from cellcommons.access.policy import Action
from cellcommons.audit import service as audit
from cellcommons.audit.models import Outcome
from cellcommons.auth.principal import Principal
from cellcommons.catalogue import changes, idempotency, repository
from cellcommons.catalogue.changes import Operation
from cellcommons.catalogue.enums import Severity, VersionStatus
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
)
from cellcommons.catalogue.schemas import (
    BatchIn,
    CollectionIn,
    DatasetIn,
    DataUseConditionIn,
    DonorIn,
    Finding,
    InstitutionIn,
    QcResultIn,
    SpecCriterionIn,
    SpecificationIn,
)
from cellcommons.catalogue.validation import (
    BatchContext,
    DatasetContext,
    findings_from_validation_error,
    validate_batch,
    validate_collection,
    validate_dataset,
    validate_donor,
    validate_specification,
)
from cellcommons.errors import Conflict, Forbidden, NotFound, ValidationFailed

Schema = TypeVar("Schema", bound=BaseModel)


def parse(schema: type[Schema], raw: object) -> Schema:
    """Raw input (a GraphQL argument, a file row, a connector record) → schema, or every problem at once."""
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise ValidationFailed(findings_from_validation_error(exc)) from None


def _checked(findings: Iterable[Finding]) -> list[dict]:
    """Raise on any error; return the warnings in the shape stored with the record."""
    findings = list(findings)
    errors = [f for f in findings if f.severity is Severity.error]
    if errors:
        raise ValidationFailed(errors + [f for f in findings if f.severity is not Severity.error])
    return [f.model_dump(mode="json") for f in findings]


def _missing(code: str, field: str, what: str) -> Finding:
    return Finding(code=code, severity=Severity.error, field=field, message=f"{what} is not in the catalogue")


async def save_institution(session: AsyncSession, data: InstitutionIn, *, origin: str) -> Institution:
    institution = await repository.institution_by_slug(session, data.slug) or Institution(slug=data.slug)
    _assign(institution, data.model_dump(), origin_node=origin)
    session.add(institution)
    await session.flush()
    return institution


async def save_donor(session: AsyncSession, institution: Institution, data: DonorIn, *, origin: str) -> Donor:
    warnings = _checked(validate_donor(data))
    found = await repository.donors_by_pseudonym(session, institution.id, [data.pseudonym])
    existing = found.get(data.pseudonym)
    donor = existing or Donor(institution_id=institution.id, tests=[], consent_conditions=[])
    _assign(donor, data.model_dump(exclude={"tests", "consent_conditions"}), origin_node=origin, findings=warnings)
    session.add(donor)
    await _replace_children(session, donor, "tests", [DonorTest(**t.model_dump()) for t in data.tests])
    await _replace_children(session, donor, "consent_conditions", [_condition(c) for c in data.consent_conditions])
    await changes.record(session, donor, _operation(existing), origin=origin)
    return donor


async def save_collection(
    session: AsyncSession, institution: Institution, data: CollectionIn, *, origin: str
) -> Collection:
    findings = list(validate_collection(data))
    donors = await repository.donors_by_pseudonym(session, institution.id, [data.donor])
    if data.donor not in donors:
        findings.append(_missing("unknown_donor", "donor", f"donor {data.donor!r}"))
    warnings = _checked(findings)
    identifiers = [i for i in (data.din, data.sec_donation) if i]
    existing = await repository.collections_by_identifier(session, institution.id, identifiers)
    found = next(iter(existing.values()), None)
    collection = found or Collection(institution_id=institution.id)
    _assign(
        collection,
        data.model_dump(exclude={"donor"}),
        origin_node=origin,
        findings=warnings,
        donor_id=donors[data.donor].id,
    )
    session.add(collection)
    await session.flush()
    await changes.record(session, collection, _operation(found), origin=origin)
    return collection


async def save_specification(
    session: AsyncSession, institution: Institution, data: SpecificationIn, *, origin: str
) -> Specification:
    _checked(validate_specification(data))
    existing = await repository.specification_by_version(session, institution.id, data.version)
    if existing is not None:
        if specification_in(existing) == data:
            return existing
        # Batches were judged against this version: a changed specification needs a new version.
        raise Conflict(f"specification version {data.version!r} exists with other criteria", field="version")
    specification = Specification(
        institution_id=institution.id,
        version=data.version,
        product_name=data.product_name,
        origin_node=origin,
        criteria=[_criterion(i, c) for i, c in enumerate(data.criteria)],
    )
    session.add(specification)
    await session.flush()
    await changes.record(session, specification, Operation.create, origin=origin)
    return specification


async def save_batch(session: AsyncSession, institution: Institution, data: BatchIn, *, origin: str) -> Batch:
    donors = await repository.donors_by_pseudonym(session, institution.id, data.donors)
    collections = await repository.collections_by_identifier(session, institution.id, data.collections)
    specification = None
    if data.specification_version:
        specification = await repository.specification_by_version(session, institution.id, data.specification_version)
    findings = [
        _missing("unknown_donor", f"donors[{i}]", f"donor {p!r}") for i, p in enumerate(data.donors) if p not in donors
    ]
    findings += [
        _missing("unknown_collection", f"collections[{i}]", f"collection {c!r}")
        for i, c in enumerate(data.collections)
        if c not in collections
    ]
    context = BatchContext(
        specification=specification_in(specification) if specification else None,
        collections=[collection_in(collections[c], "") for c in data.collections if c in collections],
    )
    warnings = _checked(findings + list(validate_batch(data, context)))

    existing = await repository.batch_by_lot(session, institution.id, data.lot_number)
    batch = existing or Batch(institution_id=institution.id, qc_results=[])
    _assign(
        batch,
        data.model_dump(exclude={"donors", "collections", "specification_version", "qc_results"}),
        origin_node=origin,
        findings=warnings,
        specification_id=specification.id if specification else None,
    )
    session.add(batch)
    await _replace_children(session, batch, "qc_results", [_qc_result(i, r) for i, r in enumerate(data.qc_results)])
    await repository.replace_batch_links(
        session,
        batch.id,
        donor_ids=[donors[p].id for p in dict.fromkeys(data.donors)],
        collection_ids=list(dict.fromkeys(collections[c].id for c in data.collections)),
    )
    await changes.record(session, batch, _operation(existing), origin=origin)
    return batch


async def save_dataset(
    session: AsyncSession,
    institution: Institution,
    data: DatasetIn,
    *,
    origin: str,
    accession: str | None = None,
) -> DatasetVersion:
    """Create a dataset, or give an existing one new draft content (a new version once the last is published)."""
    batches = await repository.batches_by_lot(session, institution.id, data.batches)
    findings = [
        _missing("unknown_batch", f"batches[{i}]", f"batch {lot!r}")
        for i, lot in enumerate(data.batches)
        if lot not in batches
    ]
    context = DatasetContext(batches=[batch_in(batches[lot]) for lot in data.batches if lot in batches])
    warnings = _checked(findings + list(validate_dataset(data, context)))

    existing = await repository.dataset_by_accession(session, institution.id, accession) if accession else None
    dataset = existing
    if accession and dataset is None:
        dataset = Dataset(institution_id=institution.id, accession=accession, doi=data.doi, origin_node=origin)
    elif dataset is None:
        dataset = Dataset(institution_id=institution.id, accession=new_accession(), doi=data.doi, origin_node=origin)
    session.add(dataset)
    await session.flush()

    latest = await repository.latest_version(session, dataset.id)
    if latest is not None and latest.status is VersionStatus.draft:
        version = latest
    else:
        version = DatasetVersion(dataset_id=dataset.id, version=(latest.version + 1) if latest else 1)
        version.distributions, version.conditions = [], []
    _assign(
        version,
        data.model_dump(exclude={"doi", "batches", "conditions", "distributions"}),
        findings=warnings,
        status=VersionStatus.draft,
    )
    session.add(version)
    await _replace_children(session, version, "conditions", [_condition(c) for c in data.conditions])
    distributions = [
        Distribution(**d.model_dump(exclude={"columns"}), columns=[c.model_dump(mode="json") for c in d.columns])
        for d in data.distributions
    ]
    await _replace_children(session, version, "distributions", distributions)
    await repository.replace_version_batches(session, version.id, [batches[lot].id for lot in batches])
    # Draft content: a change for the institution's own members only (not `shared`).
    await changes.record(session, dataset, _operation(existing), origin=origin)
    return version


async def publish(session: AsyncSession, institution: Institution, accession: str) -> DatasetVersion:
    """Publish the dataset's draft; from then on that version is immutable (the database refuses changes)."""
    dataset = await repository.dataset_by_accession(session, institution.id, accession)
    if dataset is None:
        raise NotFound(f"no dataset {accession!r}", field="accession")
    latest = await repository.latest_version(session, dataset.id)
    if latest is None or latest.status is not VersionStatus.draft:
        raise Conflict(f"dataset {accession!r} has no draft to publish", field="accession")
    latest.status = VersionStatus.published
    latest.published_at = datetime.now(UTC)
    await session.flush()
    # Other institutions learn of it when they may see the version (not a non_public one).
    published = await visibility.describe(session, latest, node_id=dataset.origin_node)
    await changes.record(session, dataset, Operation.update, origin=dataset.origin_node, shared=published.shared())
    return latest


def _operation(existing: object | None) -> Operation:
    return Operation.create if existing is None else Operation.update


def new_accession() -> str:
    return "CCD-" + secrets.token_hex(5).upper()


async def _replace_children(session: AsyncSession, parent: object, name: str, children: list) -> None:
    """Delete the old children before inserting the new (the unit of work would insert first and collide
    on their natural keys)."""
    setattr(parent, name, [])
    await session.flush()
    setattr(parent, name, children)
    await session.flush()


def _assign(record: object, values: dict, **more: object) -> None:
    for name, value in {**values, **more}.items():
        setattr(record, name, value)


def _condition(condition: DataUseConditionIn) -> DataUseCondition:
    parameter = condition.model_dump(mode="json", exclude={"term"}, exclude_none=True)
    return DataUseCondition(term=condition.term, parameter=parameter)


def _criterion(position: int, criterion: SpecCriterionIn) -> SpecCriterion:
    values = criterion.model_dump(exclude={"limit", "allowed"})
    allowed = [a.value for a in criterion.allowed] if criterion.allowed is not None else None
    return SpecCriterion(position=position, limit_value=criterion.limit, allowed=allowed, **values)


def _qc_result(position: int, result: QcResultIn) -> QcResult:
    return QcResult(position=position, **result.model_dump())


def specification_in(specification: Specification) -> SpecificationIn:
    return SpecificationIn(
        version=specification.version,
        product_name=specification.product_name,
        criteria=[
            SpecCriterionIn(
                test_type=c.test_type,
                analyte=c.analyte,
                timepoint=c.timepoint,
                operator=c.operator,
                limit=c.limit_value,
                allowed=c.allowed,
                expected=c.expected,
                unit=c.unit,
                mandatory=c.mandatory,
            )
            for c in specification.criteria
        ],
    )


def collection_in(collection: Collection, donor_pseudonym: str) -> CollectionIn:
    return CollectionIn(
        donor=donor_pseudonym or "unknown",
        din=collection.din,
        sec_donation=collection.sec_donation,
        sec_product=collection.sec_product,
        tissue=collection.tissue,
        collected_on=collection.collected_on,
        volume_ml=collection.volume_ml,
        chain_of_identity_id=collection.chain_of_identity_id,
    )


_BATCH_FIELDS = set(BatchIn.model_fields) - {"donors", "collections", "specification_version", "qc_results"}
_QC_FIELDS = set(QcResultIn.model_fields)


def batch_in(batch: Batch) -> BatchIn:
    """A stored batch in input shape, for rules that judge records through their linked batches."""
    return BatchIn(
        **{name: getattr(batch, name) for name in _BATCH_FIELDS},
        qc_results=[QcResultIn(**{name: getattr(r, name) for name in _QC_FIELDS}) for r in batch.qc_results],
    )


# ---- owners editing their records: the policy first, then the same saving, then the audit event ----------


@dataclass(frozen=True)
class Editor:
    """A principal changing its own institution's records on this node (`node_id`, the origin they get)."""

    principal: Principal
    institution: Institution
    node_id: str


@dataclass(frozen=True)
class Saved:
    record: Any
    created: bool
    replayed: bool = False  # the result of an earlier request with the same idempotency key


async def editor(session: AsyncSession, principal: Principal | None, node_id: str) -> Editor:
    if principal is None:
        raise Forbidden("sign in to change the catalogue")
    return Editor(principal, await session.get_one(Institution, principal.institution_id), node_id)


async def _authorise(session: AsyncSession, editor: Editor, existing: object | None, new: policy.Owned) -> None:
    """Create when there is no such record yet (described by `new`), else update the one there is."""
    if existing is None:
        policy.require(editor.principal, Action.create, new)
    else:
        resource = await visibility.describe(session, existing, node_id=editor.node_id)
        policy.require(editor.principal, Action.update, resource)


async def _audit(session: AsyncSession, editor: Editor, record: Any, operation: str, key: str) -> None:
    record_type = changes.RECORD_TYPES[type(record)]
    await audit.append(
        session,
        actor=editor.principal.actor,
        institution=editor.principal.institution_slug,
        action=f"catalogue.{record_type.lower()}.{operation}",
        target=f"{record_type}:{record.id}",
        details={"key": key},
    )


async def _saved(session: AsyncSession, editor: Editor, record: Any, existing: object | None, key: str) -> Saved:
    await _audit(session, editor, record, _operation(existing).value, key)
    return Saved(record, created=existing is None)


def _new(kind: type[policy.Owned], editor: Editor, key: str) -> policy.Owned:
    return kind(institution_id=editor.institution.id, key=key)


async def submit_donor(session: AsyncSession, editor: Editor, data: DonorIn) -> Saved:
    found = await repository.donors_by_pseudonym(session, editor.institution.id, [data.pseudonym])
    existing = found.get(data.pseudonym)
    await _authorise(session, editor, existing, _new(policy.DonorRecord, editor, data.pseudonym))
    donor = await save_donor(session, editor.institution, data, origin=editor.node_id)
    return await _saved(session, editor, donor, existing, data.pseudonym)


async def submit_collection(session: AsyncSession, editor: Editor, data: CollectionIn) -> Saved:
    key = data.din or data.sec_donation or ""
    found = await repository.collections_by_identifier(session, editor.institution.id, [key])
    existing = found.get(key)
    await _authorise(session, editor, existing, _new(policy.CollectionRecord, editor, key))
    collection = await save_collection(session, editor.institution, data, origin=editor.node_id)
    return await _saved(session, editor, collection, existing, key)


async def submit_specification(session: AsyncSession, editor: Editor, data: SpecificationIn) -> Saved:
    """A specification version is written once: the same content again is a no-op, other content a Conflict."""
    existing = await repository.specification_by_version(session, editor.institution.id, data.version)
    await _authorise(session, editor, existing, _new(policy.SpecificationRecord, editor, data.version))
    specification = await save_specification(session, editor.institution, data, origin=editor.node_id)
    if existing is not None:
        return Saved(specification, created=False)  # unchanged: nothing to log or audit
    return await _saved(session, editor, specification, existing, data.version)


async def submit_batch(session: AsyncSession, editor: Editor, data: BatchIn) -> Saved:
    existing = await repository.batch_by_lot(session, editor.institution.id, data.lot_number)
    await _authorise(session, editor, existing, _new(policy.BatchRecord, editor, data.lot_number))
    batch = await save_batch(session, editor.institution, data, origin=editor.node_id)
    return await _saved(session, editor, batch, existing, data.lot_number)


async def _visible_dataset(session: AsyncSession, editor: Editor, dataset_id: uuid.UUID) -> Dataset:
    return await visibility.get_visible(session, editor.principal, Dataset, dataset_id)


async def _latest_version_record(session: AsyncSession, editor: Editor, dataset: Dataset) -> policy.Resource:
    """The newest version the editor may see, as the policy judges it: the owner's members see every version,
    others the shared ones only, so a newer draft or non_public version never changes what an outsider is told
    (Forbidden, not a NotFound that would reveal it)."""
    latest = await session.scalar(
        select(DatasetVersion)
        .where(DatasetVersion.dataset_id == dataset.id, visibility.visible_dataset_versions(editor.principal))
        .order_by(DatasetVersion.version.desc())
        .limit(1)
    )
    return await visibility.describe(session, latest, node_id=editor.node_id)


async def submit_dataset(
    session: AsyncSession, editor: Editor, data: DatasetIn, dataset_id: uuid.UUID | None = None
) -> Saved:
    """A new dataset (no `dataset_id`), or new draft content for an existing one (a new version after a publish)."""
    if dataset_id is None:
        new = policy.DatasetVersionRecord(
            institution_id=editor.institution.id, access_rights=data.access_rights, published=False
        )
        policy.require(editor.principal, Action.create, new)
        accession = None
    else:
        dataset = await _visible_dataset(session, editor, dataset_id)
        policy.require(editor.principal, Action.update, await _latest_version_record(session, editor, dataset))
        accession = dataset.accession
    version = await save_dataset(session, editor.institution, data, origin=editor.node_id, accession=accession)
    dataset = await session.get_one(Dataset, version.dataset_id)
    await _audit(session, editor, dataset, "create" if dataset_id is None else "update", dataset.accession)
    return Saved(dataset, created=dataset_id is None)


async def publish_dataset(session: AsyncSession, editor: Editor, dataset_id: uuid.UUID) -> DatasetVersion:
    dataset = await _visible_dataset(session, editor, dataset_id)
    policy.require(editor.principal, Action.publish, await _latest_version_record(session, editor, dataset))
    version = await publish(session, editor.institution, dataset.accession)
    await _audit(session, editor, dataset, "publish", dataset.accession)
    return version


# What `delete_record` removes, and why the database may refuse it (a RESTRICT foreign key).
DELETABLE: dict[type, str] = {
    Donor: "it is linked to batches or collections",
    Specification: "batches were released against it",
    Batch: "dataset versions link it",
    DatasetVersion: "",
}


async def delete_record(session: AsyncSession, editor: Editor, model: type, record_id: uuid.UUID) -> None:
    """Delete a donor, specification or batch, or discard a dataset's draft version (the dataset goes with its
    only draft). Published versions are immutable; a record others still refer to stays (Conflict)."""
    row = await visibility.get_visible(session, editor.principal, model, record_id)
    resource = await visibility.describe(session, row, node_id=editor.node_id)
    policy.require(editor.principal, Action.update, resource)
    if isinstance(row, DatasetVersion):
        await _discard_draft(session, editor, row)
        return
    await _delete_row(session, row, DELETABLE[model])
    await changes.record(session, row, Operation.delete, origin=editor.node_id, shared=resource.shared())
    await _audit(session, editor, row, "delete", str(row.id))


async def _discard_draft(session: AsyncSession, editor: Editor, version: DatasetVersion) -> None:
    if version.status is not VersionStatus.draft:
        raise Conflict("a published dataset version cannot change or be deleted", field="id")
    dataset = await session.get_one(Dataset, version.dataset_id)
    await _delete_row(session, version, "")
    # Neither change is `shared`: other institutions never saw the draft, nor a dataset that had only it.
    if await repository.latest_version(session, dataset.id) is None:
        await _delete_row(session, dataset, "")
        await changes.record(session, dataset, Operation.delete, origin=editor.node_id)
        await _audit(session, editor, dataset, "delete", dataset.accession)
    else:
        await changes.record(session, dataset, Operation.update, origin=editor.node_id)
        await _audit(session, editor, dataset, "discard_draft", dataset.accession)


async def _delete_row(session: AsyncSession, row: Any, refused_because: str) -> None:
    """Delete in SQL, so the database's ON DELETE CASCADE removes the parts (the ORM relationships raise on
    load by design), in a savepoint, so a refusing foreign key leaves the transaction usable."""
    model = type(row)
    try:
        async with session.begin_nested():
            await session.execute(delete(model).where(model.id == row.id))
    except IntegrityError:
        raise Conflict(f"this {visibility.LABELS[model]} cannot be deleted: {refused_because}", field="id") from None
    session.expunge(row)


async def submit_once(
    session: AsyncSession,
    editor: Editor,
    key: str | None,
    operation: str,
    request: Any,
    submit: Callable[[], Awaitable[Saved]],
) -> Saved:
    """Run `submit` once per idempotency key (`request`: its input as JSON); a retry replays the first result."""
    if key is None:
        return await submit()
    actor = editor.principal.actor
    earlier = await idempotency.claim(session, actor, key, operation, request)
    if earlier is not None:
        model = changes.RECORDS[earlier.record_type]
        record = await visibility.get_visible(session, editor.principal, model, earlier.record_id)
        return Saved(record, created=False, replayed=True)
    saved = await submit()
    await idempotency.remember(session, actor, key, changes.RECORD_TYPES[type(saved.record)], saved.record.id)
    return saved


async def record_refusal(session: AsyncSession, principal: Principal, operation: str, reason: str) -> None:
    """Audit a refused change (in a transaction of its own: the refused one was rolled back)."""
    await audit.append(
        session,
        actor=principal.actor,
        institution=principal.institution_slug,
        action=f"catalogue.{operation}",
        outcome=Outcome.denied,
        details={"reason": reason},
    )
