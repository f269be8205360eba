"""Pages written through a COPY-filled staging table, or COPYed straight in: every value arrives exactly as given."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from cellcommons.catalogue.enums import CultureSupplement, ReleaseStatus, Sector, TransferBasis
from cellcommons.catalogue.models import Batch, Institution
from cellcommons.sync.bulk import copy_rows, insert_rows

AWKWARD = 'tab\there, line\nbreak, back\\slash, "quoted", {braced}, \\N, naïve µ'


async def _institution(session) -> uuid.UUID:
    institution = Institution(slug=f"bulk-{uuid.uuid4().hex[:8]}", name="Bulk", country="NL", sector=Sector.non_profit,
                              transfer_basis=TransferBasis.eea, origin_node="here")  # fmt: skip
    session.add(institution)
    await session.flush()
    return institution.id


def _row(institution_id: uuid.UUID, lot: str, **fields) -> dict:
    return {"institution_id": institution_id, "origin_node": "here", "lot_number": lot, "product_name": AWKWARD,
            "cell_type": "CL:0002540", "tissue": "UBERON:0002371", "release_status": ReleaseStatus.quarantine,
            "culture_supplement": None, "dmso_percent": None, "manufactured_on": None, "clinical_trial_ids": [],
            "findings": [], **fields}  # fmt: skip


async def _write(session, how: str, rows: list[dict]) -> None:
    if how == "staged":
        await session.execute(await insert_rows(session, Batch.__table__, rows, id=func.gen_random_uuid()))
    else:
        await copy_rows(session, Batch.__table__, [{"id": uuid.uuid4(), **row} for row in rows])


@pytest.mark.parametrize("how", ["staged", "copied"])
async def test_awkward_values_arrive_unchanged(session, how):
    institution_id = await _institution(session)
    findings = [{"code": "w", "severity": "warning", "field": "tissue", "message": AWKWARD, "nested": {"n": [1]}}]
    rows = [
        _row(institution_id, "BULK-1", culture_supplement=CultureSupplement.hpl, dmso_percent=Decimal("7.50"),
             manufactured_on=date(2025, 3, 1), clinical_trial_ids=["NCT01234567", 'a,"b"}{\\c'], findings=findings),
        _row(institution_id, "BULK-2"),
    ]  # fmt: skip
    await _write(session, how, rows)

    stored = {
        b.lot_number: b for b in await session.scalars(select(Batch).where(Batch.institution_id == institution_id))
    }
    first, second = stored["BULK-1"], stored["BULK-2"]
    assert first.product_name == second.product_name == AWKWARD
    assert first.culture_supplement is CultureSupplement.hpl and first.release_status is ReleaseStatus.quarantine
    assert (first.dmso_percent, first.manufactured_on) == (Decimal("7.50"), date(2025, 3, 1))
    assert first.clinical_trial_ids == ["NCT01234567", 'a,"b"}{\\c'] and second.clinical_trial_ids == []
    assert first.findings == findings and second.findings == []
    assert (second.culture_supplement, second.dmso_percent, second.manufactured_on) == (None, None, None)
    assert first.id != second.id


async def test_two_pages_staged_in_one_transaction_both_land(session):
    # A quarantine replay lands several streams in one transaction: each staging gets a table of its own.
    institution_id = await _institution(session)
    for lot in ("BULK-A", "BULK-B"):
        rows = [_row(institution_id, lot)]
        await session.execute(await insert_rows(session, Batch.__table__, rows, id=func.gen_random_uuid()))
    lots = await session.scalars(select(Batch.lot_number).where(Batch.institution_id == institution_id))
    assert sorted(lots) == ["BULK-A", "BULK-B"]
