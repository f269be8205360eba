"""What an export refuses, and that a refusal leaves nothing half-written: agreements that are not the
requester's, not in force or not covering; forbidden columns and bad filters; a source that changed or is gone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from tests.exports.conftest import TODAY, request
from tests.exports.test_exports import CSV, CSV_COLUMNS, run_export

from cellcommons.access.models import Agreement, AgreementStatus
from cellcommons.catalogue.models import Distribution
from cellcommons.errors import Conflict, InvalidInput, NotFound
from cellcommons.exports import service
from cellcommons.exports.errors import AgreementNotInForce, ColumnForbidden
from cellcommons.exports.models import ExportStatus
from cellcommons.storage import buckets


async def set_agreement(world, key: str, **values) -> None:
    async with world.database.unit_of_work() as session:
        await session.execute(update(Agreement).where(Agreement.id == world.agreements[key].id).values(**values))


@pytest.fixture
async def restore(world):
    """Put the agreements back as the module made them after a test changes one."""
    yield
    for key, original in world.agreements.items():
        await set_agreement(world, key, status=original.status, revoked_at=None, expires_on=original.expires_on)


async def test_another_institutions_agreement_and_an_uncovered_version_answer_like_missing_ones(world):
    with pytest.raises(NotFound) as theirs:
        await request(world, "maple", agreement="lowlands")  # Maple is no party to Lowlands' agreement
    with pytest.raises(NotFound) as missing:
        async with world.database.unit_of_work() as session:
            await service.request_export(session, world.settings, world.member("maple"), agreement_id=uuid.uuid4(),
                                         dataset_version_id=world.consortium.versions["leiden"].id)  # fmt: skip
    assert (theirs.value.code, theirs.value.message) == (missing.value.code, missing.value.message)

    with pytest.raises(NotFound) as uncovered:
        await request(world, "lowlands", dataset_version_id=uuid.uuid4())
    assert uncovered.value.field == "datasetVersionId"


@pytest.mark.usefixtures("restore")
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (dict(status=AgreementStatus.revoked, revoked_at=datetime.now(UTC)), "the agreement was revoked"),
        (dict(expires_on=TODAY), f"the agreement expired on {TODAY}"),
    ],
)
async def test_an_agreement_no_longer_in_force_refuses_new_exports(world, change, reason):
    await set_agreement(world, "lowlands", **change)
    with pytest.raises(AgreementNotInForce) as refused:
        await request(world, "lowlands")
    assert (refused.value.code, refused.value.message) == ("agreement_not_in_force", reason)


async def test_a_withheld_column_or_a_filter_on_one_names_it(world):
    with pytest.raises(ColumnForbidden) as forbidden:
        await request(world, "lowlands", columns=["lot_number", "lab_secret"])
    assert (forbidden.value.code, forbidden.value.field) == ("export_column_forbidden", "columns[1]")
    file = await world.add_file("refusals.csv", CSV, CSV_COLUMNS)
    with pytest.raises(ColumnForbidden, match="'full_name' cannot be exported: the agreement's policy withholds it"):
        await request(world, "lowlands", dataset_version_id=file[0], distribution_id=file[1], columns=["full_name"])
    with pytest.raises(InvalidInput) as filtered:
        await request(world, "lowlands", dataset_version_id=file[0], distribution_id=file[1],
                      row_filter=[{"column": "full_name", "op": "eq", "value": "Jan Jansen"}])  # fmt: skip
    assert filtered.value.field == "filter[0].column"
    with pytest.raises(InvalidInput) as typed:
        await request(world, "lowlands", dataset_version_id=file[0], distribution_id=file[1],
                      row_filter=[{"column": "viability_pct", "op": "gt", "value": "high"}])  # fmt: skip
    assert typed.value.field == "filter[0].value"


@pytest.mark.usefixtures("restore")
async def test_revocation_between_request_and_run_fails_the_job_and_stops_downloads(world):
    job = await request(world, "lowlands")
    await set_agreement(world, "lowlands", status=AgreementStatus.revoked, revoked_at=datetime.now(UTC))
    worker = world.worker()
    await worker.claim(job.id)
    failed = await worker.run(job.id)
    assert (failed.status, failed.error_code) == (ExportStatus.failed, "agreement_not_in_force")

    await set_agreement(world, "lowlands", status=AgreementStatus.active, revoked_at=None)
    done = await run_export(world, "lowlands")
    assert done.status is ExportStatus.succeeded
    await set_agreement(world, "lowlands", status=AgreementStatus.revoked, revoked_at=datetime.now(UTC))
    with pytest.raises(AgreementNotInForce):
        await world.result(done, "lowlands")


async def test_a_download_url_only_for_a_succeeded_export_of_ones_own_institution(world):
    job = await request(world, "lowlands")
    async with world.database.unit_of_work() as session:
        with pytest.raises(Conflict, match="the export is queued"):
            await service.issue_export_download_url(session, world.store, world.settings, world.member("lowlands"),
                                                    job.id)  # fmt: skip
        with pytest.raises(NotFound):
            await service.get_export(session, world.member("stroma"), job.id)


async def test_a_source_that_changed_fails_the_job_and_leaves_nothing_in_the_bucket(world):
    file = await world.add_file("changing.csv", CSV, CSV_COLUMNS)
    await world.replace_file_bytes(file[1], CSV.replace(b"91.5", b"99.9"))
    before = world.exported_keys("lowlands")
    job = await run_export(world, "lowlands", source=file)
    assert (job.status, job.error_code, job.error_field) == (ExportStatus.failed, "source_changed", "distributionId")
    assert "changed" in job.error_message
    assert world.exported_keys("lowlands") == before
    assert job.finished_at is not None and job.lease_owner is None


@pytest.mark.parametrize("name", ["gone.csv", "gone.parquet"])
async def test_a_source_no_longer_stored_fails_the_job_without_saying_where_it_was_kept(world, name):
    file = await world.add_file(name, CSV, CSV_COLUMNS)
    async with world.database.unit_of_work() as session:
        distribution = await session.get_one(Distribution, file[1])
    bucket = buckets.institution_bucket(world.settings, world.consortium.institutions["leiden"].id)
    world.store.delete(bucket, distribution.storage_key)
    job = await run_export(world, "lowlands", source=file)
    assert (job.status, job.error_code, job.error_field) == (ExportStatus.failed, "source_missing", "distributionId")
    assert job.error_message == f"the file {name} is no longer in object storage"


async def test_claims_skip_locked_jobs_and_take_over_an_expired_lease(world):
    job = await request(world, "stroma", agreement="stroma")
    first, second = world.worker(), world.worker()
    assert await first.claim(job.id) == job.id
    assert await second.claim(job.id) is None  # running under a live lease
    async with world.database.unit_of_work() as session:
        await session.execute(
            update(type(job)).where(type(job).id == job.id).values(lease_expires_at=datetime.now(UTC) - timedelta(1))
        )
    assert await second.claim(job.id) == job.id  # the first worker "died": its lease ran out
    taken = await world.job(job.id)
    assert (taken.attempts, taken.lease_owner) == (2, second.name)
    # The first worker, back from the dead, leaves the job it lost alone.
    lost = await first.run(job.id)
    assert lost.lease_owner == second.name and lost.status is ExportStatus.running
    done = await second.run(job.id)
    assert done.status is ExportStatus.succeeded


async def test_a_stopping_worker_puts_its_job_back_and_aborts_the_upload(world):
    job = await request(world, "lowlands")
    worker = world.worker()
    await worker.claim(job.id)
    worker.stopping.set()  # as SIGTERM does, before the first batch is written
    before = world.exported_keys("lowlands")
    back = await worker.run(job.id)
    assert (back.status, back.attempts, back.lease_owner) == (ExportStatus.queued, 0, None)
    assert world.exported_keys("lowlands") == before
