"""The catalogue service against the real PostgreSQL (application role, rolled back after each test)."""

from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from cellcommons.catalogue import service
from cellcommons.catalogue.models import Batch, DatasetVersion, QcResult
from cellcommons.catalogue.schemas import BatchIn, DonorIn, InstitutionIn, SpecificationIn
from cellcommons.demo.consortium import SCALES, Consortium
from cellcommons.demo.seed import dataset_input, seed_through_service
from cellcommons.errors import Conflict, NotFound, ValidationFailed

ORIGIN = "test-node"


@pytest.fixture(scope="module")
def records():
    return next(Consortium(SCALES["tiny"], seed=11).records())


@pytest.fixture
async def institution(session, records):
    institution = await service.save_institution(session, InstitutionIn(**records.institution), origin=ORIGIN)
    for spec in records.specifications:
        await service.save_specification(session, institution, SpecificationIn(**spec), origin=ORIGIN)
    for donor in records.donors:
        await service.save_donor(session, institution, DonorIn(**donor), origin=ORIGIN)
    for collection in records.collections:
        await service.save_collection(
            session, institution, service.parse(service.CollectionIn, collection), origin=ORIGIN
        )
    return institution


def _batch(records, **changes) -> BatchIn:
    return BatchIn(**{**records.batches[0], **changes})


async def _count(session, model) -> int:
    return await session.scalar(select(func.count()).select_from(model))


async def test_a_valid_batch_is_saved_with_its_results_links_and_origin(session, institution, records):
    batch = await service.save_batch(session, institution, _batch(records), origin=ORIGIN)
    assert batch.origin_node == ORIGIN
    assert len(batch.qc_results) == 10
    linked = await session.scalar(text("SELECT count(*) FROM batch_donor WHERE batch_id = :b"), {"b": batch.id})
    assert linked == 1


async def test_saving_the_same_lot_again_updates_it_instead_of_duplicating(session, institution, records):
    await service.save_batch(session, institution, _batch(records), origin=ORIGIN)
    again = await service.save_batch(
        session, institution, _batch(records, product_name="BM-MSC renamed"), origin=ORIGIN
    )
    assert again.product_name == "BM-MSC renamed"
    assert await _count(session, Batch) == 1
    assert await _count(session, QcResult) == 10


async def test_a_viability_in_the_wrong_unit_is_an_error_and_nothing_is_written(session, institution, records):
    data = records.batches[0]
    qc = [dict(q) for q in data["qc_results"]]
    qc[0] = {**qc[0], "unit": "10*6/mL"}
    with pytest.raises(ValidationFailed) as caught:
        await service.save_batch(session, institution, _batch(records, qc_results=qc), origin=ORIGIN)
    fields = {f.field for f in caught.value.findings}
    assert "qc_results[0].unit" in fields
    assert caught.value.as_dict()["code"] == "validation_failed"
    assert await _count(session, Batch) == 0


async def test_every_error_is_listed_not_only_the_first(session, institution, records):
    bad = _batch(
        records,
        donors=["nobody-known"],
        collections=["G123498654321H"],
        manufactured_on=date(2026, 1, 10),
        released_on=date(2026, 1, 5),
    )
    with pytest.raises(ValidationFailed) as caught:
        await service.save_batch(session, institution, bad, origin=ORIGIN)
    codes = {(f.code, f.field) for f in caught.value.findings}
    assert ("unknown_donor", "donors[0]") in codes
    assert ("unknown_collection", "collections[0]") in codes
    assert any(f.code == "chronology" for f in caught.value.findings)


async def test_raw_input_with_bad_types_names_each_field(session):
    raw = {"lot_number": "BM-1", "product_name": "BM-MSC", "cell_type": "CL:0002540", "tissue": "bone marrow",
           "qc_results": [{"test_type": "viability", "value": "ninety"}]}  # fmt: skip
    with pytest.raises(ValidationFailed) as caught:
        service.parse(BatchIn, raw)
    fields = {f.field for f in caught.value.findings}
    assert {"tissue", "qc_results[0].value"} <= fields


async def test_a_changed_specification_needs_a_new_version(session, institution, records):
    spec = dict(records.specifications[0])
    same = await service.save_specification(session, institution, SpecificationIn(**spec), origin=ORIGIN)
    assert same.version == spec["version"]
    changed = {**spec, "criteria": spec["criteria"][:3]}
    with pytest.raises(Conflict) as caught:
        await service.save_specification(session, institution, SpecificationIn(**changed), origin=ORIGIN)
    assert caught.value.field == "version"


async def test_the_database_enforces_keys_and_ranges(session, institution, records):
    await service.save_batch(session, institution, _batch(records), origin=ORIGIN)
    columns = "institution_id, lot_number, product_name, cell_type, tissue, release_status, origin_node"
    values = ":i, :lot, 'x', 'CL:0002540', 'UBERON:0002371', 'quarantine', 'n'"
    with pytest.raises(IntegrityError, match="uq_batch_institution_id_lot_number"):
        async with session.begin_nested():
            await session.execute(
                text(f"INSERT INTO batch (id, {columns}) VALUES (gen_random_uuid(), {values})"),
                {"i": institution.id, "lot": records.batches[0]["lot_number"]},
            )
    with pytest.raises(IntegrityError, match="ck_batch_volume_non_negative"):
        async with session.begin_nested():
            await session.execute(
                text(f"INSERT INTO batch (id, {columns}, volume_ml) VALUES (gen_random_uuid(), {values}, -1)"),
                {"i": institution.id, "lot": "NEW-LOT"},
            )
    shipped = values.replace("quarantine", "shipped")
    shipped = values.replace("quarantine", "shipped")
    with pytest.raises(DBAPIError, match="invalid input value for enum release_status"):
        async with session.begin_nested():
            await session.execute(
                text(f"INSERT INTO batch (id, {columns}) VALUES (gen_random_uuid(), {shipped})"),
                {"i": institution.id, "lot": "NEW-LOT-2"},
            )


async def test_a_published_version_is_immutable_and_edits_make_a_new_draft(session, institution, records):
    for batch in records.batches:
        await service.save_batch(session, institution, BatchIn(**batch), origin=ORIGIN)
    accession, content = dataset_input(records.datasets[0])
    draft = await service.save_dataset(session, institution, content, origin=ORIGIN, accession=accession)
    assert (draft.version, draft.status.value) == (1, "draft")
    published = await service.publish(session, institution, accession)
    assert published.published_at is not None

    with pytest.raises(DBAPIError, match="is published and cannot change"):
        async with session.begin_nested():
            await session.execute(update(DatasetVersion).where(DatasetVersion.id == published.id).values(title="x"))
    with pytest.raises(DBAPIError, match="is published and cannot change"):
        async with session.begin_nested():
            await session.execute(text("DELETE FROM distribution WHERE dataset_version_id = :v"), {"v": published.id})

    edited = content.model_copy(update={"title": "A corrected title"})
    second = await service.save_dataset(session, institution, edited, origin=ORIGIN, accession=accession)
    assert (second.version, second.status.value, second.title) == (2, "draft", "A corrected title")
    first = await session.scalar(
        select(DatasetVersion.title).where(DatasetVersion.id == published.id).execution_options(populate_existing=True)
    )
    assert first == content.title
    await service.publish(session, institution, accession)
    with pytest.raises(Conflict, match="no draft"):
        await service.publish(session, institution, accession)
    with pytest.raises(NotFound):
        await service.publish(session, institution, "CCD-NOT-THERE")


async def test_a_dataset_cannot_link_another_institutions_batch(session, institution, records):
    other_records = list(Consortium(SCALES["tiny"], seed=11).records())[1]
    other = await service.save_institution(session, InstitutionIn(**other_records.institution), origin=ORIGIN)
    await service.save_batch(session, institution, _batch(records), origin=ORIGIN)
    accession, content = dataset_input(other_records.datasets[0])
    content = content.model_copy(update={"batches": [records.batches[0]["lot_number"]]})
    with pytest.raises(ValidationFailed) as caught:
        await service.save_dataset(session, other, content, origin=ORIGIN, accession=accession)
    assert ("unknown_batch", "batches[0]") in {(f.code, f.field) for f in caught.value.findings}


async def test_the_tiny_consortium_seeds_through_the_service(session):
    counts = await seed_through_service(session, Consortium(SCALES["tiny"], seed=3), origin=ORIGIN)
    assert counts["batch"] == 16 and counts["dataset"] == 8
    assert await _count(session, Batch) == 16
    assert await _count(session, QcResult) == 160
    assert isinstance((await session.scalar(select(Batch.population_doublings).limit(1))), Decimal)
