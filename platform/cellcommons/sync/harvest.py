"""Harvested copies: another Cell Commons node's specifications, batches (with their QC results) and datasets
(their published versions, with conditions, file metadata and batch links), as its change feed gives them.

A copy is keyed by the record's global id at its origin. Its local id is derived from that id (a UUID5 of the
origin node and the id), so a tombstone, which names nothing but the id, finds its copy, and links between
copies (a batch's specification, a version's batches) resolve without a lookup table. Copies name the peer as
their `origin_node`: only this target writes them, never over a record of another origin (nor does anything
else write over them; the catalogue's policy refuses local edits). Institutions the feed names and this node
does not know are added as copies too; a record filed under an institution of another node (this one's own, or
another peer's, by slug or ROR id) is refused: a peer brings copies of its own institutions' records only, and
must not plant records under ours (nor block our own sync of them). Every write is logged to the change log with
the peer as its origin, which keeps it out of this node's own feed (the peer publishes it).

The feed shows what the harvesting client may see: donors and collections of other institutions never come,
draft dataset versions are skipped (only published versions are the catalogue's), and files come as metadata
(names, sizes, checksums, columns); their bytes stay at the origin.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Table, delete, func, insert, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.catalogue.changes import Operation
from cellcommons.catalogue.enums import Severity, VersionStatus
from cellcommons.catalogue.models import (
    Batch,
    Dataset,
    DatasetVersion,
    DataUseCondition,
    Distribution,
    Institution,
    SpecCriterion,
    Specification,
    dataset_version_batch,
)
from cellcommons.catalogue.schemas import BatchIn, DatasetIn, Finding, InstitutionIn, SpecificationIn
from cellcommons.catalogue.service import parse
from cellcommons.catalogue.validation import DatasetContext, validate_dataset, validate_specification
from cellcommons.catalogue.validation.findings import error
from cellcommons.errors import ValidationFailed
from cellcommons.sync.sdk import read_timestamp
from cellcommons.sync.targets import (
    BATCH_COLUMNS,
    CREATED,
    Checked,
    Scope,
    batch_row,
    content_hash,
    log_changes,
    replace_qc_results,
    upserted,
)

NAMESPACE = uuid.UUID("6f1d4a52-9c3e-4e0b-8d57-0c8f3a1e2b64")  # of harvested copies' local ids


def local_id(origin: str, global_id: str) -> uuid.UUID:
    """The id a copy of the origin's record `global_id` has on this node."""
    return uuid.uuid5(NAMESPACE, f"{origin}/{global_id}")


class HarvestedRecord(BaseModel):
    """One change of the peer's feed as the node connector hands it over (`record`: the record's fields)."""

    model_config = ConfigDict(extra="forbid")

    record_id: str = Field(min_length=3, max_length=200)
    record_type: Literal["Specification", "Batch", "Dataset"]
    institution: InstitutionIn
    record: dict[str, Any]


def _errors_only(findings: list[Finding]) -> list[Finding]:
    """Raise ValidationFailed with the errors; otherwise the warnings."""
    errors = [f for f in findings if f.severity is Severity.error]
    if errors:
        raise ValidationFailed(errors)
    return findings


def _prefixed(exc: ValidationFailed, prefix: str) -> ValidationFailed:
    return ValidationFailed([f.model_copy(update={"field": prefix + f.field}) for f in exc.findings])


# ---- one kind of record each ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """How one record type lands: its table, the unique keys besides the id, the columns an update sets."""

    name: str
    table: Table
    unique: tuple[tuple[str, ...], ...]
    columns: tuple[str, ...]


SPECIFICATION = Kind("Specification", Specification.__table__, (("institution_id", "version"),),
                     ("version", "product_name"))  # fmt: skip
BATCH = Kind("Batch", Batch.__table__, (("institution_id", "lot_number"),),
             (*BATCH_COLUMNS, "specification_id", "findings"))  # fmt: skip
DATASET = Kind("Dataset", Dataset.__table__, (("accession",), ("doi",)), ("accession", "doi"))
KINDS = {kind.name: kind for kind in (SPECIFICATION, BATCH, DATASET)}  # in the order a page lands them


def _specification(record: dict[str, Any]) -> tuple[dict, list[dict]]:
    data = parse(SpecificationIn, record)
    _errors_only(validate_specification(data))
    return {"version": data.version, "product_name": data.product_name}, _criteria(data)


def _criteria(data: SpecificationIn) -> list[dict]:
    return [
        {"position": i, "limit_value": c.limit, "allowed": [a.value for a in c.allowed] if c.allowed else None,
         **c.model_dump(exclude={"limit", "allowed"})}
        for i, c in enumerate(data.criteria)
    ]  # fmt: skip


def _shaped(value: object, kind: type[dict] | type[list], field: str) -> Any:
    """A nested feed value of the JSON kind the record type has there (None as empty), or a refusal naming it:
    one peer record of the wrong shape is quarantined, not the whole page failed."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise ValidationFailed(
            [error("invalid_shape", field, f"must be a JSON {'object' if kind is dict else 'list'}")]
        )
    return value


def _batch(record: dict[str, Any]) -> tuple[dict, list[dict] | None]:
    """A batch is judged against the specification it was released against, which the feed nests in it."""
    record = dict(record)
    nested = record.pop("specification", None)
    specification, spec_id = None, None
    if nested is not None:
        spec_id = _shaped(nested, dict, "specification").get("id")
        try:
            specification = parse(SpecificationIn, {k: v for k, v in nested.items() if k != "id"})
        except ValidationFailed as exc:
            raise _prefixed(exc, "specification.") from None
        record["specification_version"] = specification.version
    row, children = batch_row(parse(BatchIn, record), specification, [])
    return row | {"specification": spec_id}, children


VERSION_FACTS = {"id", "version", "status", "published_at", "batches"}  # a version's facts beyond its content


def _dataset(record: dict[str, Any]) -> tuple[dict, list[dict]]:
    """A dataset's identity, and its published versions each checked as the catalogue checks a dataset."""
    versions = []
    for index, version in enumerate(_shaped(record.get("versions"), list, "versions")):
        at = f"versions[{index}]"
        if _shaped(version, dict, at).get("status") != VersionStatus.published.value:
            continue  # drafts are the custodian's work in progress
        content = {k: v for k, v in version.items() if k not in VERSION_FACTS}
        conditions = _shaped(version.get("conditions"), list, f"{at}.conditions")
        content["conditions"] = [_condition(c, f"{at}.conditions[{i}]") for i, c in enumerate(conditions)]
        try:
            data = parse(DatasetIn, content | {"doi": record.get("doi")})
            warnings = _errors_only(validate_dataset(data, DatasetContext()))
        except ValidationFailed as exc:
            raise _prefixed(exc, f"versions[{index}].") from None
        published_at, unreadable = read_timestamp(version.get("published_at"), f"versions[{index}].published_at")
        if unreadable:
            raise ValidationFailed([Finding.model_validate(finding) for finding in unreadable])
        versions.append({
            "id": version.get("id"), "version": version.get("version"), "published_at": published_at,
            "data": data, "findings": [f.model_dump(mode="json") for f in warnings],
            "batches": list(_shaped(version.get("batches"), list, f"{at}.batches")),
        })  # fmt: skip
    return {"accession": record.get("accession"), "doi": record.get("doi")}, versions


def _condition(value: object, field: str) -> dict[str, Any]:
    condition = _shaped(value, dict, field)
    return {"term": condition.get("term"), **_shaped(condition.get("parameter"), dict, f"{field}.parameter")}


CHECKS = {"Specification": _specification, "Batch": _batch, "Dataset": _dataset}


@dataclass(frozen=True)
class HarvestScope(Scope):
    """A harvest's scope, with the institutions of other nodes than the feed's origin (by slug and ROR id)."""

    others_slugs: frozenset[str]
    others_ror_ids: frozenset[str]


def _of_another_node(institution: InstitutionIn, scope: HarvestScope) -> list[Finding]:
    """Findings when the institution a record names belongs to another node than the feed's origin."""
    claimed = []
    if institution.slug in scope.others_slugs:
        claimed.append(("slug", institution.slug))
    if institution.ror_id in scope.others_ror_ids:
        claimed.append(("ror_id", institution.ror_id))
    message = "institution {}: {!r} belongs to another node than {!r}; a peer brings its own institutions' records only"
    return [
        error("institution_of_another_node", f"institution.{name}", message.format(name, value, scope.origin))
        for name, value in claimed
    ]


# ---- the target ----------------------------------------------------------------------------------------------


class HarvestTarget:
    """Copies of a peer node's records, keyed by their global id at the peer."""

    name = "node_record"
    natural_key = ("record_id",)
    schema = HarvestedRecord

    async def scope(self, session: AsyncSession, institution_id: uuid.UUID, origin: str) -> HarvestScope:
        others = (
            await session.execute(select(Institution.slug, Institution.ror_id).where(Institution.origin_node != origin))
        ).all()
        return HarvestScope(
            institution_id=institution_id,
            origin=origin,
            specifications={},
            others_slugs=frozenset(slug for slug, _ in others),
            others_ror_ids=frozenset(ror_id for _, ror_id in others if ror_id),
        )

    def key_of(self, raw: dict[str, Any]) -> str | None:
        value = raw.get("record_id")
        return value if isinstance(value, str) and value else None

    def check(self, raw: dict[str, Any], scope: HarvestScope) -> Checked:
        envelope = parse(HarvestedRecord, raw)
        _errors_only(_of_another_node(envelope.institution, scope))
        row, children = CHECKS[envelope.record_type](envelope.record)
        row = {"type": envelope.record_type, "institution": envelope.institution, "values": row}
        return Checked(envelope.record_id, row, children, content_hash(raw))

    async def upsert(self, session: AsyncSession, scope: Scope, records: list[Checked]) -> set[str]:
        if not records:
            return set()
        institutions = await _institutions(session, scope.origin, [r.row["institution"] for r in records])
        written: set[str] = set()
        for kind in KINDS.values():
            mine = [r for r in records if r.row["type"] == kind.name]
            if mine:
                written |= await self._upsert(session, scope.origin, kind, institutions, mine)
        return written

    async def _upsert(
        self, session: AsyncSession, origin: str, kind: Kind, institutions: dict[str, uuid.UUID], records: list[Checked]
    ) -> set[str]:
        rows = {}
        for record in records:
            institution_id = institutions.get(record.row["institution"].slug)
            if institution_id is None:
                continue  # not the origin's (see _institutions): left out, so refused as held by another origin
            values = {k: v for k, v in record.row["values"].items() if k in kind.columns}
            if kind is BATCH:
                spec = record.row["values"]["specification"]
                values["specification_id"] = local_id(origin, spec) if spec else None
            rows[record.key] = {"id": local_id(origin, record.key), "origin_node": origin,
                                "institution_id": institution_id, **values}  # fmt: skip
        if kind is BATCH:
            await _drop_unknown_specifications(session, rows.values())
        rows = await _without_taken_keys(session, kind, rows)
        if not rows:
            return set()
        statement = pg_insert(kind.table)
        statement = statement.on_conflict_do_update(
            index_elements=[kind.table.c.id],
            set_={c: statement.excluded[c] for c in kind.columns} | {"updated_at": func.now()},
            where=kind.table.c.origin_node == statement.excluded.origin_node,
        ).returning(kind.table.c.id, kind.table.c.institution_id, CREATED)
        result = (await session.execute(statement, list(rows.values()))).all()
        ids = {row_id for row_id, _, _ in result}
        landed = {key: row["id"] for key, row in rows.items() if row["id"] in ids}
        children = {landed[r.key]: r.children for r in records if r.key in landed}
        if kind is SPECIFICATION:
            await _replace_criteria(session, children)
        elif kind is BATCH:
            await replace_qc_results(session, children)
        else:
            await _add_versions(session, origin, children)
        await log_changes(session, kind.name, [(i, inst, upserted(new)) for i, inst, new in result], origin)
        return set(landed)

    async def delete(self, session: AsyncSession, scope: Scope, keys: list[str]) -> tuple[set[str], set[str]]:
        """Delete the copies the tombstones name (a type never harvested deletes nothing). A copy the database
        keeps (a batch a harvested dataset version links, a published version) is refused."""
        deleted, refused = set(), set()
        for key in keys:
            kind = KINDS.get(key.partition("_")[0])
            if kind is None:
                continue
            table, row_id = kind.table, local_id(scope.origin, key)
            try:
                async with session.begin_nested():
                    gone = (
                        await session.execute(
                            delete(table)
                            .where(table.c.id == row_id, table.c.origin_node == scope.origin)
                            .returning(table.c.institution_id)
                        )
                    ).all()
            except DBAPIError:
                refused.add(key)
                continue
            if gone:
                deleted.add(key)
                await log_changes(session, kind.name, [(row_id, gone[0][0], Operation.delete)], scope.origin)
        return deleted, refused


async def _institutions(session: AsyncSession, origin: str, named: list[InstitutionIn]) -> dict[str, uuid.UUID]:
    """Ids by slug of the named institutions that are the origin's; those this node does not know are added as
    copies of the origin's. One whose slug or ROR id another row holds is missing (the insert does nothing):
    `check` refuses those of other nodes, and this catches one that became another node's since the run's scope
    was read, or a ROR id the origin's copy holds under another slug."""
    wanted = {i.slug: i for i in named}
    rows = [{"id": uuid.uuid4(), "origin_node": origin, **i.model_dump()} for i in wanted.values()]
    await session.execute(pg_insert(Institution.__table__).on_conflict_do_nothing(), rows)
    origins = select(Institution.slug, Institution.id).where(
        Institution.slug.in_(wanted), Institution.origin_node == origin
    )
    return dict((await session.execute(origins)).all())


async def _drop_unknown_specifications(session: AsyncSession, rows) -> None:
    """A batch links its specification's copy when there is one (the feed sends specifications first)."""
    wanted = {row["specification_id"] for row in rows if row["specification_id"]}
    known = set(await session.scalars(select(Specification.id).where(Specification.id.in_(wanted))))
    for row in rows:
        if row["specification_id"] not in known:
            row["specification_id"] = None


async def _without_taken_keys(session: AsyncSession, kind: Kind, rows: dict[str, dict]) -> dict[str, dict]:
    """Leave out copies whose unique key another row holds (a local record, or another origin's copy): those
    are refused rather than allowed to fail the page."""
    ids = [row["id"] for row in rows.values()]
    for columns in kind.unique:
        wanted = {tuple(row[c] for c in columns) for row in rows.values() if all(row.get(c) for c in columns)}
        if not wanted:
            continue
        key = tuple_(*(kind.table.c[c] for c in columns))
        taken = await session.execute(
            select(*(kind.table.c[c] for c in columns)).where(key.in_(list(wanted)), kind.table.c.id.not_in(ids))
        )
        held = {tuple(row) for row in taken}
        rows = {k: row for k, row in rows.items() if tuple(row.get(c) for c in columns) not in held}
    return rows


async def _replace_criteria(session: AsyncSession, criteria: dict[uuid.UUID, list[dict]]) -> None:
    await session.execute(delete(SpecCriterion).where(SpecCriterion.specification_id.in_(list(criteria))))
    rows = [{"id": uuid.uuid4(), "specification_id": spec_id, **c} for spec_id, cs in criteria.items() for c in cs]
    if rows:
        await session.execute(insert(SpecCriterion.__table__), rows)


async def _add_versions(session: AsyncSession, origin: str, versions: dict[uuid.UUID, list[dict]]) -> None:
    """Add the published versions not copied yet. A published version never changes, and the database refuses
    parts for one: each is written as a draft with its parts, then published."""
    wanted = {local_id(origin, v["id"]): (dataset_id, v) for dataset_id, vs in versions.items() for v in vs}
    held = set(await session.scalars(select(DatasetVersion.id).where(DatasetVersion.id.in_(list(wanted)))))
    for version_id, (dataset_id, version) in wanted.items():
        if version_id not in held:
            await _add_version(session, origin, dataset_id, version_id, version)


async def _add_version(
    session: AsyncSession, origin: str, dataset_id: uuid.UUID, version_id: uuid.UUID, version: dict
) -> None:
    data: DatasetIn = version["data"]
    values = data.model_dump(exclude={"doi", "batches", "conditions", "distributions"})
    await session.execute(
        insert(DatasetVersion.__table__).values(
            id=version_id, dataset_id=dataset_id, version=version["version"], status=VersionStatus.draft.value,
            findings=version["findings"], **values,
        )
    )  # fmt: skip
    conditions = [
        {"id": uuid.uuid4(), "dataset_version_id": version_id, "term": c.term,
         "parameter": c.model_dump(mode="json", exclude={"term"}, exclude_none=True)}
        for c in data.conditions
    ]  # fmt: skip
    await session.execute(insert(DataUseCondition.__table__), conditions)
    files = [
        {"id": uuid.uuid4(), "dataset_version_id": version_id, **d.model_dump(exclude={"columns"}),
         "columns": [c.model_dump(mode="json") for c in d.columns]}
        for d in data.distributions
    ]  # fmt: skip
    if files:
        await session.execute(insert(Distribution.__table__), files)
    batch_ids = [local_id(origin, gid) for gid in version["batches"]]
    present = list(await session.scalars(select(Batch.id).where(Batch.id.in_(batch_ids))))
    if present:
        await session.execute(
            insert(dataset_version_batch), [{"dataset_version_id": version_id, "batch_id": b} for b in present]
        )
    await session.execute(
        update(DatasetVersion.__table__)
        .where(DatasetVersion.__table__.c.id == version_id)
        .values(status=VersionStatus.published.value, published_at=version["published_at"])
    )
