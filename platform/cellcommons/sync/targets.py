"""Target entities: how a stream's records are validated with the catalogue's rules and written in batches.

Validation is the catalogue's own (the input schema, then the pure rule functions of catalogue/validation);
writing is a batched `INSERT … ON CONFLICT` on the entity's natural key, so a page costs a few statements
whatever its size. Harvested copies (another node's origin) are never overwritten or deleted by a sync.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Container
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy import ColumnElement, Insert, Row, case, delete, exists, func, insert, literal, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from cellcommons.catalogue.changes import Change, Operation
from cellcommons.catalogue.enums import Severity
from cellcommons.catalogue.models import Batch, QcResult, Specification, dataset_version_batch
from cellcommons.catalogue.schemas import BatchIn, Finding, SpecificationIn
from cellcommons.catalogue.service import parse, specification_in
from cellcommons.catalogue.validation import BatchContext, validate_batch
from cellcommons.catalogue.validation.findings import error
from cellcommons.errors import ValidationFailed
from cellcommons.sync.bulk import copy_rows, insert_rows, per_key


@dataclass(frozen=True)
class Checked:
    """A record that passed validation: its natural key, the row to write and a hash of that content."""

    key: str
    row: dict[str, Any]
    children: list[dict[str, Any]] | None  # QC results to replace the stored ones with; None leaves them
    content_hash: str


@dataclass(frozen=True)
class Scope:
    """Where records land: the source's institution, this node as their origin, and per-run lookups."""

    institution_id: uuid.UUID
    origin: str
    specifications: dict[str, tuple[uuid.UUID, SpecificationIn]]


_CANONICAL = json.JSONEncoder(sort_keys=True, default=str)  # built once: json.dumps(**options) builds one per call


def content_hash(content: object) -> str:
    return hashlib.sha256(_CANONICAL.encode(content).encode()).hexdigest()


# `xmax` is zero on a row version this statement inserted (PostgreSQL): tells a create from an update.
CREATED = literal_column("xmax = 0").label("created")

_BATCH_LINKS = {"donors", "collections", "specification_version", "qc_results"}
BATCH_COLUMNS = tuple(name for name in BatchIn.model_fields if name not in _BATCH_LINKS)
_UPDATED = (*BATCH_COLUMNS, "specification_id", "findings")


class BatchTarget:
    """Batches (lots) keyed by lot number within the manufacturer, with their QC results when a record has them."""

    name = "batch"
    natural_key = ("lot_number",)
    schema = BatchIn

    async def scope(self, session: AsyncSession, institution_id: uuid.UUID, origin: str) -> Scope:
        found = await session.scalars(
            select(Specification)
            .where(Specification.institution_id == institution_id)
            .options(selectinload(Specification.criteria))
        )
        specs = {spec.version: (spec.id, specification_in(spec)) for spec in found}
        return Scope(institution_id=institution_id, origin=origin, specifications=specs)

    def key_of(self, raw: dict[str, Any]) -> str | None:
        value = raw.get("lot_number")
        return str(value).strip() if value not in (None, "") else None

    def check(self, raw: dict[str, Any], scope: Scope) -> Checked:
        """Raise ValidationFailed listing every problem; otherwise the row and QC results to write."""
        data = parse(BatchIn, raw)
        spec_id, spec = scope.specifications.get(data.specification_version or "", (None, None))
        row, children = batch_row(data, spec, _unsupported_links(data))
        # Serialised by pydantic-core (fields in declaration order: canonical for one schema), not dumped to
        # Python and re-encoded: a third of a record's validation time went to that.
        digest = hashlib.sha256(data.model_dump_json(exclude_unset=True).encode()).hexdigest()
        return Checked(data.lot_number, row | {"specification_id": spec_id}, children, digest)

    async def upsert(self, session: AsyncSession, scope: Scope, records: list[Checked]) -> set[str]:
        """Write the records; return the keys written (a harvested copy with the same key is left alone).
        Lots the institution does not hold yet are COPYed straight in (a first sync is mostly those); the rest
        go through a staged `INSERT … ON CONFLICT`."""
        if not records:
            return set()
        common = {"institution_id": scope.institution_id, "origin_node": scope.origin}
        held = await _held_lots(session, scope.institution_id, [r.key for r in records])
        new = {r.key: {"id": uuid.uuid4(), **common, **r.row} for r in records if r.key not in held}
        await _insert_new(session, scope.origin, list(new.values()))
        written = {key: row["id"] for key, row in new.items()}
        written |= await _update_held(session, scope.origin, [{**common, **r.row} for r in records if r.key in held])
        children = {written[r.key]: r.children for r in records if r.key in written}
        await replace_qc_results(session, children, new={row["id"] for row in new.values()})
        return set(written)

    async def delete(self, session: AsyncSession, scope: Scope, keys: list[str]) -> tuple[set[str], set[str]]:
        """Delete by key; return (deleted, refused). A batch that a dataset links, or a harvested copy, stays."""
        if not keys:
            return set(), set()
        table = Batch.__table__
        mine = (table.c.institution_id == scope.institution_id) & table.c.lot_number.in_(keys)
        linked = exists().where(dataset_version_batch.c.batch_id == table.c.id)
        deleted = (
            await session.execute(
                delete(table)
                .where(mine, table.c.origin_node == scope.origin, ~linked)
                .returning(table.c.id, table.c.lot_number)
            )
        ).all()
        # Only a batch no dataset links can go, and such a batch was visible to every member: a shared tombstone.
        gone = [(batch_id, scope.institution_id, Operation.delete) for batch_id, _ in deleted]
        await log_changes(session, "Batch", gone, scope.origin, shared=True)
        left = await session.scalars(select(table.c.lot_number).where(mine))
        return {lot for _, lot in deleted}, set(left)


async def _held_lots(session: AsyncSession, institution_id: uuid.UUID, lots: list[str]) -> set[str]:
    def held(lot):
        return select(Batch.lot_number).where(Batch.institution_id == institution_id, Batch.lot_number == lot)

    return set((await session.scalars(per_key(lots, held))).all())


async def _insert_new(session: AsyncSession, origin: str, rows: list[dict[str, Any]]) -> None:
    """COPY lots the institution did not hold a moment ago, with their change-log entries (in lot order: two
    writers of overlapping lots then wait on each other rather than deadlock)."""
    rows = sorted(rows, key=itemgetter("lot_number"))
    await copy_rows(session, Batch.__table__, rows)
    created = [(row["id"], row["institution_id"], Operation.create) for row in rows]
    await log_changes(session, "Batch", created, origin)


async def _update_held(session: AsyncSession, origin: str, rows: list[dict[str, Any]]) -> dict[str, uuid.UUID]:
    """Upsert lots the institution holds (by lot number); a harvested copy is left alone. Lot → id written."""
    if not rows:
        return {}
    table = Batch.__table__
    statement = await insert_rows(session, table, rows, id=func.gen_random_uuid())
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.institution_id, table.c.lot_number],
        set_={name: statement.excluded[name] for name in _UPDATED} | {"updated_at": func.now()},
        where=table.c.origin_node == statement.excluded.origin_node,
    )
    written = await logged_upsert(session, statement, "Batch", origin, table.c.lot_number)
    return {lot: batch_id for batch_id, lot in written}


def _unsupported_links(data: BatchIn) -> list[Finding]:
    # Donor and collection links need their records first; a sync does not resolve them (yet).
    return [
        error("link_not_synced", name, f"{name} cannot be linked by a sync; leave it empty")
        for name in ("donors", "collections")
        if getattr(data, name)
    ]


def batch_row(
    data: BatchIn, specification: SpecificationIn | None, findings: list[Finding]
) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """The batch's column values (with its warnings) and QC results (None: the record leaves them alone);
    ValidationFailed when the catalogue's rules find an error."""
    findings = findings + validate_batch(data, BatchContext(specification=specification))
    if any(f.severity is Severity.error for f in findings):
        raise ValidationFailed([f for f in findings if f.severity is Severity.error])
    row = data.model_dump(exclude=_BATCH_LINKS) | {"findings": [f.model_dump(mode="json") for f in findings]}
    children = None
    if "qc_results" in data.model_fields_set:
        children = [{"position": i, **r.model_dump()} for i, r in enumerate(data.qc_results)]
    return row, children


async def replace_qc_results(
    session: AsyncSession, results: dict[uuid.UUID, list[dict[str, Any]] | None], *, new: Container[uuid.UUID] = ()
) -> None:
    """Replace the QC results of each batch that has a list (None leaves a batch's results alone); batches in
    `new` were created in this transaction and have none to delete."""
    results = {batch_id: rows for batch_id, rows in results.items() if rows is not None}
    replaced = [batch_id for batch_id in results if batch_id not in new]
    if replaced:
        await session.execute(delete(QcResult).where(QcResult.batch_id.in_(replaced)))
    rows = [{"id": uuid.uuid4(), "batch_id": batch_id, **row} for batch_id, rows in results.items() for row in rows]
    await copy_rows(session, QcResult.__table__, rows)  # the old ones are gone: every row is new


def upserted(created: bool) -> Operation:
    return Operation.create if created else Operation.update


async def logged_upsert(
    session: AsyncSession, upsert: Insert, record_type: str, origin: str, *returned: ColumnElement
) -> list[Row]:
    """Run an `INSERT … ON CONFLICT` and log every row it wrote to the change log in the same statement (a
    data-modifying CTE: no second round trip, no second copy of the page); returns (id, *returned) per row."""
    table = upsert.table
    written = upsert.returning(table.c.id, table.c.institution_id, CREATED, *returned).cte("written")
    operation = case((written.c.created, Operation.create.value), else_=Operation.update.value)
    logged = insert(Change).from_select(
        ["record_type", "record_id", "institution_id", "operation", "origin_node"],
        select(literal(record_type), written.c.id, written.c.institution_id, operation, literal(origin)),
    )
    query = select(written.c.id, *(written.c[c.name] for c in returned)).add_cte(logged.cte("logged"))
    return (await session.execute(query)).all()  # fetched at once: iterating fetches row by row


async def log_changes(
    session: AsyncSession,
    record_type: str,
    rows: list[tuple[uuid.UUID, uuid.UUID, Operation]],
    origin: str,
    *,
    shared: bool = False,
) -> None:
    """Log (record id, institution id, operation) to the change log, as the catalogue service does for its
    writes. Records of another origin are logged with it, which keeps them out of this node's feed."""
    if rows:
        entries = [
            {"record_type": record_type, "record_id": record_id, "institution_id": institution_id,
             "operation": operation.value, "origin_node": origin, "shared": shared}
            for record_id, institution_id, operation in rows
        ]  # fmt: skip
        await copy_rows(session, Change.__table__, entries)


TARGETS = {target.name: target for target in (BatchTarget(),)}
