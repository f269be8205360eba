"""Target entities: how a stream's records are validated with the catalogue's rules and written in batches.

Validation is the catalogue's own (the input schema, then the pure rule functions of catalogue/validation);
writing is a batched `INSERT … ON CONFLICT` on the entity's natural key, so a page costs a few statements
whatever its size. Harvested copies (another node's origin) are never overwritten or deleted by a sync.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, exists, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from cellcommons.catalogue.enums import Severity
from cellcommons.catalogue.models import Batch, QcResult, Specification, dataset_version_batch
from cellcommons.catalogue.schemas import BatchIn, Finding, SpecificationIn
from cellcommons.catalogue.service import specification_in
from cellcommons.catalogue.validation import BatchContext, findings_from_validation_error, validate_batch
from cellcommons.catalogue.validation.findings import error
from cellcommons.errors import ValidationFailed


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


def _hash(content: object) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


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
        try:
            data = BatchIn.model_validate(raw)
        except ValidationError as exc:
            raise ValidationFailed(findings_from_validation_error(exc)) from None
        findings = _unsupported_links(data)
        spec_id, spec = scope.specifications.get(data.specification_version or "", (None, None))
        findings += validate_batch(data, BatchContext(specification=spec))
        if any(f.severity is Severity.error for f in findings):
            raise ValidationFailed([f for f in findings if f.severity is Severity.error])
        row = data.model_dump(include=set(BATCH_COLUMNS))
        row |= {"specification_id": spec_id, "findings": [f.model_dump(mode="json") for f in findings]}
        children = None
        if "qc_results" in data.model_fields_set:
            children = [{"position": i, **r.model_dump()} for i, r in enumerate(data.qc_results)]
        content = data.model_dump(mode="json", exclude_unset=True)
        return Checked(key=data.lot_number, row=row, children=children, content_hash=_hash(content))

    async def upsert(self, session: AsyncSession, scope: Scope, records: list[Checked]) -> set[str]:
        """Write the records; return the keys written (a harvested copy with the same key is left alone)."""
        if not records:
            return set()
        table = Batch.__table__
        statement = pg_insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.institution_id, table.c.lot_number],
            set_={name: statement.excluded[name] for name in _UPDATED} | {"updated_at": func.now()},
            where=table.c.origin_node == statement.excluded.origin_node,
        ).returning(table.c.id, table.c.lot_number)
        common = {"institution_id": scope.institution_id, "origin_node": scope.origin}
        rows = [{"id": uuid.uuid4(), **common, **r.row} for r in records]
        written = {lot: batch_id for batch_id, lot in (await session.execute(statement, rows)).all()}
        await self._replace_qc_results(session, [r for r in records if r.children is not None], written)
        return set(written)

    async def _replace_qc_results(
        self, session: AsyncSession, records: list[Checked], written: dict[str, uuid.UUID]
    ) -> None:
        records = [r for r in records if r.key in written]
        if not records:
            return
        await session.execute(delete(QcResult).where(QcResult.batch_id.in_([written[r.key] for r in records])))
        rows = [{"id": uuid.uuid4(), "batch_id": written[r.key], **child} for r in records for child in r.children]
        if rows:
            await session.execute(insert(QcResult.__table__), rows)

    async def delete(self, session: AsyncSession, scope: Scope, keys: list[str]) -> tuple[set[str], set[str]]:
        """Delete by key; return (deleted, refused). A batch that a dataset links, or a harvested copy, stays."""
        if not keys:
            return set(), set()
        table = Batch.__table__
        mine = (table.c.institution_id == scope.institution_id) & table.c.lot_number.in_(keys)
        linked = exists().where(dataset_version_batch.c.batch_id == table.c.id)
        deleted = await session.scalars(
            delete(table).where(mine, table.c.origin_node == scope.origin, ~linked).returning(table.c.lot_number)
        )
        gone = set(deleted)
        left = await session.scalars(select(table.c.lot_number).where(mine))
        return gone, set(left)


def _unsupported_links(data: BatchIn) -> list[Finding]:
    # Donor and collection links need their records first; a sync does not resolve them (yet).
    return [
        error("link_not_synced", name, f"{name} cannot be linked by a sync; leave it empty")
        for name in ("donors", "collections")
        if getattr(data, name)
    ]


TARGETS = {target.name: target for target in (BatchTarget(),)}
