"""Saving catalogue records: validate everything first, then write; errors block, warnings are kept.

Each `save_*` takes the owning institution and the node the record originates from, flushes and never
commits: the request, job or sync run that calls it owns the transaction, so a rejected input leaves nothing
half-written.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.catalogue import repository
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
from cellcommons.errors import Conflict, NotFound, ValidationFailed

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
    donor = found.get(data.pseudonym) or Donor(institution_id=institution.id, tests=[], consent_conditions=[])
    _assign(donor, data.model_dump(exclude={"tests", "consent_conditions"}), origin_node=origin, findings=warnings)
    session.add(donor)
    await _replace_children(session, donor, "tests", [DonorTest(**t.model_dump()) for t in data.tests])
    await _replace_children(session, donor, "consent_conditions", [_condition(c) for c in data.consent_conditions])
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
    collection = next(iter(existing.values()), None) or Collection(institution_id=institution.id)
    _assign(
        collection,
        data.model_dump(exclude={"donor"}),
        origin_node=origin,
        findings=warnings,
        donor_id=donors[data.donor].id,
    )
    session.add(collection)
    await session.flush()
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

    batch = await repository.batch_by_lot(session, institution.id, data.lot_number)
    if batch is None:
        batch = Batch(institution_id=institution.id, qc_results=[])
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

    dataset = await repository.dataset_by_accession(session, institution.id, accession) if accession else None
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
    return latest


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
