"""The export worker: claims queued jobs, runs them, records the outcome.

Claiming is one UPDATE over a `FOR UPDATE SKIP LOCKED` pick, so workers never wait on each other and never take
the same job. The claim sets a lease that a heartbeat renews (with the progress) while the job runs; a job whose
lease ran out (its worker died) is claimable again, up to MAX_ATTEMPTS tries. The Parquet is written in a worker
thread (pyarrow and the minio SDK block) while the event loop keeps the heartbeat and the database work.

Stopping (SIGTERM/SIGINT): the writer sees the stop flag between batches and raises, the SDK aborts the
multipart upload (nothing half-written stays in the bucket), and the job goes back to the queue without counting
the attempt. Each attempt writes its own key, so a worker that lost its lease deletes only its own object.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import version as installed_version

import pyarrow as pa
from sqlalchemy import and_, func, or_, select, update

from cellcommons.access.models import Agreement
from cellcommons.audit.models import Outcome
from cellcommons.background import BackgroundLoop
from cellcommons.catalogue.models import Dataset, DataUseCondition, Institution
from cellcommons.db import Database
from cellcommons.errors import CellCommonsError, Unavailable
from cellcommons.exports import filters, service
from cellcommons.exports.errors import AttemptsExhausted
from cellcommons.exports.models import ExportJob, ExportStatus
from cellcommons.exports.policy import PolicyApplier, pseudonym_key
from cellcommons.exports.sources import Quarantine, blocking, catalogue_batches, distribution_batches
from cellcommons.exports.writer import AHEAD_BYTES, PART_SIZE, Ahead, ParquetStream, with_terms
from cellcommons.observability import metrics
from cellcommons.outages import outlasting
from cellcommons.settings import Settings
from cellcommons.storage import buckets
from cellcommons.storage.object_store import ObjectStore

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3
MAX_PAUSE = 60.0  # seconds between claims while jobs keep going back to the queue (an outage)
LEASE = timedelta(seconds=60)
SYSTEM_ACTOR = "system:export-worker"


class Interrupted(Exception):
    """The worker is stopping: the job goes back to the queue."""


class LeaseLost(Exception):
    """Another worker holds the job now (this one's lease ran out): leave it alone."""


@dataclass
class Progress:
    rows: int = 0
    bytes: int = 0
    listeners: list[Callable[[int, int], None]] = field(default_factory=list)

    def update(self, rows: int, size: int) -> None:
        self.rows, self.bytes = rows, size
        for listener in self.listeners:
            listener(rows, size)


@dataclass(frozen=True)
class Prepared:
    """A claimed job's checked scope and everything the writer thread needs (no ORM access there)."""

    job: ExportJob
    scope: service.Scope
    custodian_id: uuid.UUID  # whose bucket holds the source file
    key: str
    terms: dict[str, str]


class ExportWorker:
    def __init__(
        self, database: Database, store: ObjectStore, settings: Settings, *, lease: timedelta = LEASE,
        on_progress: Callable[[int, int], None] | None = None,
    ):  # fmt: skip
        self.database, self.store, self.settings, self.lease = database, store, settings, lease
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stopping = threading.Event()
        self.on_progress = on_progress

    # ---- claiming --------------------------------------------------------------------------------------

    async def claim(self, export_id: uuid.UUID | None = None) -> uuid.UUID | None:
        """Take the oldest claimable job (or this one, if claimable); None when there is none."""
        claimable = or_(
            ExportJob.status == ExportStatus.queued,
            and_(ExportJob.status == ExportStatus.running, ExportJob.lease_expires_at < func.now()),
        )
        pick = select(ExportJob.id).where(claimable).order_by(ExportJob.created_at).limit(1)
        if export_id is not None:
            pick = pick.where(ExportJob.id == export_id)
        claim = (
            update(ExportJob)
            .where(ExportJob.id == pick.with_for_update(skip_locked=True).scalar_subquery())
            .values(status=ExportStatus.running, lease_owner=self.name, lease_expires_at=func.now() + self.lease,
                    attempts=ExportJob.attempts + 1, started_at=func.coalesce(ExportJob.started_at, func.now()))
            .returning(ExportJob.id)
        )  # fmt: skip
        async with self.database.unit_of_work() as session:
            return await session.scalar(claim)

    async def run_next(self) -> ExportJob | None:
        export_id = await self.claim()
        return None if export_id is None else await self.run(export_id)

    async def serve(self, stop: asyncio.Event, interval: float = 2.0, on_job: Callable | None = None) -> None:
        """Run jobs until `stop` is set; between jobs, poll every `interval` seconds. An outage of the database
        or object storage does not end the loop: a job it interrupted goes back to the queue (or, with the
        database gone too, is taken up again once its lease runs out), and the worker waits longer after each
        job it had to give back (up to MAX_PAUSE, with jitter) rather than claim it again at once."""
        stop_watch = asyncio.create_task(self._relay(stop))
        given_back = 0
        try:
            while not stop.is_set():
                job = await outlasting(self.run_next, _report_outage)
                if job is not None and on_job:
                    on_job(job)
                if job is None:  # nothing to claim (or the database away): poll again after `interval`
                    given_back = 0
                elif job.status is ExportStatus.queued:  # given back in an outage
                    given_back += 1
                else:
                    given_back = 0
                    continue
                pause = min(MAX_PAUSE, interval * 2**given_back) if given_back else interval
                try:
                    await asyncio.wait_for(stop.wait(), timeout=pause * random.uniform(0.8, 1.2))
                except TimeoutError:
                    pass
        finally:
            stop_watch.cancel()

    async def _relay(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.stopping.set()  # seen by the writer thread between batches

    # ---- running ------------------------------------------------------------------------------------------

    async def run(self, export_id: uuid.UUID) -> ExportJob:
        """Run a job this worker has claimed, to success, failure, or back to the queue when stopping."""
        progress = Progress(listeners=[self.on_progress] if self.on_progress else [])
        quarantine = None
        try:
            prepared = await self._prepare(export_id)
            quarantine = Quarantine(prepared.job.bad_rows)
            heartbeat = asyncio.create_task(self._heartbeat(export_id, progress))
            try:
                stream = await self._write(prepared, quarantine, progress)
            finally:
                heartbeat.cancel()
            return _counted(await self._succeeded(prepared, stream, quarantine))
        except Interrupted:
            return await self._release(export_id)
        except LeaseLost:
            async with self.database.unit_of_work() as session:
                return await session.get_one(ExportJob, export_id)
        except Unavailable as exc:
            log.warning("export %s: %s; back to the queue", export_id, exc.message)
            return await self._release(export_id)
        except CellCommonsError as exc:
            return _counted(await self._failed(export_id, exc, quarantine))
        except Exception:
            log.exception("export %s failed unexpectedly", export_id)
            failure = CellCommonsError("the export failed; operators were told")
            return _counted(await self._failed(export_id, failure, quarantine))

    async def _prepare(self, export_id: uuid.UUID) -> Prepared:
        async with self.database.unit_of_work() as session:
            job = await session.get_one(ExportJob, export_id)
            if job.lease_owner != self.name:
                raise LeaseLost
            if job.attempts > MAX_ATTEMPTS:
                raise AttemptsExhausted(f"the export was tried {MAX_ATTEMPTS} times without finishing", field="id")
            agreement = await session.get_one(Agreement, job.agreement_id)
            scope = await service.scope(session, job.institution_id, agreement, job.dataset_version_id,
                                        job.distribution_id, job.columns)  # fmt: skip
            dataset = await session.get_one(Dataset, scope.version.dataset_id)
            key = buckets.export_key(agreement.id, job.id)
            terms = await _terms(session, job, scope, dataset)
            return Prepared(job=job, scope=scope, custodian_id=dataset.institution_id, key=key, terms=terms)

    async def _write(self, prepared: Prepared, quarantine: Quarantine, progress: Progress) -> ParquetStream:
        scope, loop = prepared.scope, asyncio.get_running_loop()
        reader = self.database.sessions() if scope.distribution is None else None
        try:
            if reader is not None:
                source = blocking(catalogue_batches(reader, scope.version.id, scope.plans), loop)
            else:
                bucket = buckets.institution_bucket(self.settings, prepared.custodian_id)
                d = scope.distribution
                source = distribution_batches(self.store, bucket, d.storage_key, d.media_type, d.file_name, d.sha256,
                                              scope.plans, quarantine)  # fmt: skip
            return await asyncio.to_thread(self._upload, prepared, source, progress)
        finally:
            if reader is not None:
                await reader.close()

    def _upload(self, prepared: Prepared, source: Iterator[pa.RecordBatch], progress: Progress) -> ParquetStream:
        policy = PolicyApplier(prepared.scope.plans, pseudonym_key(self.settings, prepared.job.agreement_id))
        keep = filters.combined(prepared.job.row_filter, policy.schema, policy.banded)
        stream: ParquetStream

        def exported() -> Iterator[pa.RecordBatch]:
            for batch in source:
                if self.stopping.is_set():
                    raise Interrupted
                out = policy(batch)
                yield out if keep is None else out.filter(keep)

        def counted(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            """Progress as the encoder takes each batch (on its thread, once the stream exists)."""
            for batch in batches:
                progress.update(progress.rows + batch.num_rows, stream.size)
                yield batch

        bucket = buckets.exports_bucket(self.settings)
        self.store.ensure_bucket(bucket)
        parquet = "application/vnd.apache.parquet"
        # Reading and the policy on a thread of their own; Parquet encoding and hashing on this one, which the
        # SDK's upload threads read parts from (a few in flight).
        with Ahead(exported(), AHEAD_BYTES, "export-policy") as batches:
            schema = with_terms(policy.schema, prepared.terms)
            stream = ParquetStream(counted(iter(batches)), schema, without_statistics=policy.pseudonymised)
            self.store.put_stream(bucket, prepared.key, stream, content_type=parquet, part_size=PART_SIZE)
        progress.update(stream.rows, stream.size)
        return stream

    async def _heartbeat(self, export_id: uuid.UUID, progress: Progress) -> None:
        """Renew the lease (with the progress) every third of it. A beat the database misses is tried again at
        the next: the lease outlasts two misses, and one miss must not end the renewals."""
        while True:
            await asyncio.sleep(min(5.0, self.lease.total_seconds() / 3))
            try:
                await outlasting(lambda: self._beat(export_id, progress), _report_outage)
            except Exception:  # a bug here must not leave the lease to run out under a running job
                log.exception("export %s: the lease could not be renewed", export_id)

    async def _beat(self, export_id: uuid.UUID, progress: Progress) -> None:
        async with self.database.unit_of_work() as session:
            await session.execute(
                update(ExportJob)
                .where(ExportJob.id == export_id, ExportJob.lease_owner == self.name)
                .values(rows_written=progress.rows, bytes_written=progress.bytes,
                        lease_expires_at=func.now() + self.lease)
            )  # fmt: skip

    # ---- outcomes ----------------------------------------------------------------------------------------

    async def _succeeded(self, prepared: Prepared, stream: ParquetStream, quarantine: Quarantine) -> ExportJob:
        async with self.database.unit_of_work() as session:
            job = await self._mine(session, prepared.job.id)
            if job is None:  # the lease was lost and another worker has the job: this object is nobody's
                self.store.delete(buckets.exports_bucket(self.settings), prepared.key)
                return await session.get_one(ExportJob, prepared.job.id)
            _finish(job, ExportStatus.succeeded)
            job.result_key, job.sha256, job.size_bytes = prepared.key, stream.sha256, stream.size
            job.rows_written, job.bytes_written = stream.rows, stream.size
            job.rows_quarantined, job.quarantine = quarantine.count, quarantine.sample
            job.policy = [plan.describe() for plan in prepared.scope.plans]
            details = {"rows": stream.rows, "bytes": stream.size, "sha256": stream.sha256,
                       "quarantined": quarantine.count}  # fmt: skip
            await service.audit(session, job, SYSTEM_ACTOR, "export.completed", details)
            return job

    async def _failed(self, export_id: uuid.UUID, error: CellCommonsError, quarantine: Quarantine | None):
        async with self.database.unit_of_work() as session:
            job = await self._mine(session, export_id)
            if job is None:
                return await session.get_one(ExportJob, export_id)
            _finish(job, ExportStatus.failed)
            job.error_code, job.error_message, job.error_field = error.code, error.message, error.field
            if quarantine is not None:
                job.rows_quarantined, job.quarantine = quarantine.count, quarantine.sample
            details = {"code": error.code, "message": error.message}
            await service.audit(session, job, SYSTEM_ACTOR, "export.failed", details, outcome=Outcome.failure)
            return job

    async def _release(self, export_id: uuid.UUID) -> ExportJob:
        async with self.database.unit_of_work() as session:
            job = await self._mine(session, export_id)
            if job is None:
                return await session.get_one(ExportJob, export_id)
            job.status, job.lease_owner, job.lease_expires_at = ExportStatus.queued, None, None
            job.attempts -= 1  # stopping is not the job's fault
            job.rows_written = job.bytes_written = 0
            return job

    async def _mine(self, session, export_id: uuid.UUID) -> ExportJob | None:
        query = select(ExportJob).where(ExportJob.id == export_id, ExportJob.lease_owner == self.name)
        return await session.scalar(query.with_for_update())


def _report_outage(down: Unavailable) -> None:
    log.warning("export worker: %s; trying again shortly", down.message)


def _counted(job: ExportJob) -> ExportJob:
    """Count a job this worker finished, after its commit (a job another worker took over is theirs to count)."""
    if job.status in (ExportStatus.succeeded, ExportStatus.failed):
        metrics.export_finished(job.status.value, job.rows_written or 0, job.bytes_written or 0)
    return job


def _finish(job: ExportJob, status: ExportStatus) -> None:
    job.status, job.lease_owner, job.lease_expires_at, job.finished_at = status, None, None, datetime.now(UTC)


async def _terms(session, job: ExportJob, scope: service.Scope, dataset: Dataset) -> dict[str, str]:
    """The Parquet key-value metadata: the terms the file travels with and where it came from."""
    agreement, version, distribution = scope.agreement, scope.version, scope.distribution
    parties = Institution.id.in_([agreement.provider_institution_id, agreement.recipient_institution_id])
    slugs = dict((await session.execute(select(Institution.id, Institution.slug).where(parties))).all())
    of_version = DataUseCondition.dataset_version_id == version.id
    conditions = await session.execute(select(DataUseCondition.term, DataUseCondition.parameter).where(of_version))
    terms = {
        "export_id": str(job.id), "dua_id": str(agreement.id),
        "recipient": slugs[agreement.recipient_institution_id], "recipient_subject": agreement.recipient_subject,
        "provider": slugs[agreement.provider_institution_id], "purpose": json.dumps(agreement.purpose),
        "effective_on": agreement.effective_on.isoformat(), "expires_on": agreement.expires_on.isoformat(),
        "duo_terms": json.dumps([{"term": t, "parameter": p} for t, p in conditions.all()]),
        "onward_transfer": agreement.onward_transfer.value, "no_reidentification": "true",
        "publication_terms": agreement.publication_terms or "", "end_of_term": agreement.end_of_term.value,
        "dataset_id": dataset.accession, "dataset_version": str(version.version),
        "source": f"distribution:{distribution.file_name}" if distribution else "catalogue:batches_with_qc_results",
        "source_sha256": (distribution.sha256 or "") if distribution else "",
        "policy": json.dumps([plan.describe() for plan in scope.plans]), "filter": json.dumps(job.row_filter),
        "platform_version": installed_version("cellcommons"),
    }  # fmt: skip
    return {f"cellcommons.{key}": value for key, value in terms.items()}


def background_worker(settings: Settings, interval: float = 1.0) -> BackgroundLoop:
    """An export worker on a thread of its own (the demo runs one beside the API). `stop()` lets the job in
    progress finish its batch and go back to the queue, its upload aborted."""

    async def serve(database: Database, stop: asyncio.Event) -> None:
        await ExportWorker(database, ObjectStore.from_settings(settings), settings).serve(stop, interval)

    return BackgroundLoop(settings, "export-worker", serve)
