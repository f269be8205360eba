"""The batched lookups run on the driver read exactly what the ORM reads: the same visible rows, in the same
order per parent, with the same attribute names, values and Python types (enums, arrays, JSON, decimals)."""

from __future__ import annotations

from collections import defaultdict

import pytest
from sqlalchemy import inspect, select

from cellcommons.access import visibility
from cellcommons.auth.principal import Principal, Role
from cellcommons.catalogue import reading
from cellcommons.catalogue.dataset_page import dataset_page
from cellcommons.catalogue.models import (
    Batch,
    Dataset,
    DatasetVersion,
    DataUseCondition,
    Distribution,
    Institution,
    QcResult,
    SpecCriterion,
    Specification,
    dataset_version_batch,
)
from cellcommons.demo.consortium import SCALES, Consortium
from cellcommons.demo.seed import seed_through_service
from cellcommons.errors import NotFound

# (lookup, model, parent attribute, parent model, order within a parent)
CHILDREN = [
    (reading.qc_results_of, QcResult, "batch_id", Batch, "position"),
    (reading.versions_of, DatasetVersion, "dataset_id", Dataset, "version"),
    (reading.distributions_of, Distribution, "dataset_version_id", DatasetVersion, "file_name"),
    (reading.conditions_of, DataUseCondition, "dataset_version_id", DatasetVersion, "term"),
    (reading.criteria_of, SpecCriterion, "specification_id", Specification, "position"),
]


@pytest.fixture
async def seeded(session):
    await seed_through_service(session, Consortium(SCALES["tiny"], seed=21), origin="test")


async def _principal(session, who: str) -> Principal | None:
    if who == "anonymous":
        return None
    institution = await session.scalar(select(Institution).where(Institution.slug == "leiden-scgt"))
    roles = frozenset({Role.reader, Role.steward}) if who == "steward" else frozenset({Role.reader})
    return Principal(institution.id, institution.slug, "alice", roles)


def _read(row, model) -> tuple:
    """Every mapped attribute with its value and exact type: equal tuples mean the row reads the same."""
    return tuple((name, type(getattr(row, name)), getattr(row, name)) for name in inspect(model).columns.keys())


async def _orm(session, model, principal, *where) -> list:
    query = select(model).where(visibility.VISIBLE[model](principal, model), *where)
    return list(await session.scalars(query))


@pytest.mark.parametrize("who", ["reader", "steward", "anonymous"])
async def test_children_read_as_the_orm_reads_them(session, seeded, who):
    principal = await _principal(session, who)
    for load, model, parent, parent_model, order in CHILDREN:
        parents = list(await session.scalars(select(parent_model.id)))
        found = await load(session, principal, parents)
        expected = defaultdict(list)
        rows = await _orm(session, model, principal, getattr(model, parent).in_(parents))
        for row in sorted(rows, key=lambda r: (getattr(r, parent), getattr(r, order))):
            expected[getattr(row, parent)].append(_read(row, model))
        assert {key: [_read(r, model) for r in rows] for key, rows in found.items()} == expected, model.__name__
        if principal is not None:
            assert expected, f"nothing of {model.__name__} is visible: the comparison would be empty"


@pytest.mark.parametrize("who", ["reader", "anonymous"])
async def test_rows_by_id_read_as_the_orm_reads_them(session, seeded, who):
    principal = await _principal(session, who)
    for model in reading.NODE_MODELS.values():
        ids = list(await session.scalars(select(model.id)))
        found = await reading.by_ids(session, principal, model, ids)
        expected = {row.id: _read(row, model) for row in await _orm(session, model, principal)}
        assert {key: _read(row, model) for key, row in found.items()} == expected, model.__name__


async def test_linked_batches_read_as_the_orm_reads_them(session, seeded):
    principal = await _principal(session, "reader")
    versions = list(await session.scalars(select(DatasetVersion.id)))
    found = await reading.batches_of(session, principal, versions)
    link = dataset_version_batch
    query = (
        select(link.c.dataset_version_id, Batch)
        .join(Batch, Batch.id == link.c.batch_id)
        .where(visibility.visible_batches(principal))
        .order_by(link.c.dataset_version_id, Batch.created_at, Batch.id)
    )
    expected = defaultdict(list)
    for version_id, batch in await session.execute(query):
        expected[version_id].append(_read(batch, Batch))
    assert expected
    assert {key: [_read(r, Batch) for r in rows] for key, rows in found.items()} == expected


@pytest.mark.parametrize("accession", ["CCD-NONE-000000", "CCD-LEID-\x00", "\x00"])
async def test_a_dataset_page_no_accession_can_name_is_not_found_like_a_missing_one(session, seeded, accession):
    """Found in review: an accession with a NUL character (the portal's `/datasets/%00`) reached PostgreSQL,
    which refuses it as a parameter: an internal error instead of the page of a missing dataset."""
    principal = await _principal(session, "reader")
    with pytest.raises(NotFound) as refused:
        await dataset_page(session, principal, accession)
    assert refused.value.code == "not_found"
