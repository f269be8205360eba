"""GraphQL for Parquet exports: request one under an agreement, follow its status, get its file.

`requestExport` queues a job (a worker runs it); `export(id)` and `myExports` show status, progress, the error
(code, message, field) and the result's size and SHA-256; `exportDownloadUrl` is a mutation because it writes
the audit log, and it answers only while the agreement is in force. Jobs are your institution's own: another
institution's answers like a missing one.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from cellcommons.errors import NotFound
from cellcommons.exports import models, service
from cellcommons.graphql.types import Node
from cellcommons.storage.downloads import DEFAULT_EXPIRY
from cellcommons.storage.object_store import ObjectStore

ExportStatus = strawberry.enum(models.ExportStatus)
BadRows = strawberry.enum(models.BadRows, name="ExportBadRows")


@strawberry.type(description="Why an export failed: a stable code, a message naming line and column, the field.")
class ExportError:
    code: str
    message: str
    field: str | None


@strawberry.type(description="A Parquet export under a data-use agreement, from request to file.")
class Export(Node):
    row: strawberry.Private[models.ExportJob]
    status: ExportStatus
    rows_written: float = strawberry.field(description="Rows written so far (all of them once succeeded)")
    bytes_written: float = strawberry.field(description="Bytes of Parquet written so far")
    rows_quarantined: float = strawberry.field(description="Malformed source rows set aside (bad rows: quarantine)")
    quarantine: JSON = strawberry.field(description="The first rows set aside: line, column and reason")
    error: ExportError | None
    sha256: str | None = strawberry.field(description="SHA-256 of the file, once succeeded")
    size_bytes: float | None
    columns: list[str] | None = strawberry.field(description="The columns asked for (null: every allowed column)")
    policy: JSON = strawberry.field(description="Per exported column: its sensitivity tag, treatment and type")
    filter: JSON
    bad_rows: BadRows
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @strawberry.field(description="The agreement the export is made under")
    def agreement_id(self, info: strawberry.Info) -> strawberry.ID:
        return strawberry.ID(info.context.ids.global_id("Agreement", self.row.agreement_id))

    @strawberry.field
    def dataset_version_id(self, info: strawberry.Info) -> strawberry.ID:
        return strawberry.ID(info.context.ids.global_id("DatasetVersion", self.row.dataset_version_id))

    @strawberry.field(description="The tabular file exported; null: the catalogue's batches with QC results")
    def distribution_id(self, info: strawberry.Info) -> strawberry.ID | None:
        key = self.row.distribution_id
        return None if key is None else strawberry.ID(info.context.ids.global_id("Distribution", key))

    @classmethod
    def of(cls, row: models.ExportJob) -> Export:
        error = ExportError(code=row.error_code, message=row.error_message, field=row.error_field)
        return cls(
            row=row, status=row.status, rows_written=row.rows_written, bytes_written=row.bytes_written,
            rows_quarantined=row.rows_quarantined, quarantine=row.quarantine,
            error=error if row.error_code else None, sha256=row.sha256, size_bytes=row.size_bytes,
            columns=row.columns, policy=row.policy, filter=row.row_filter, bad_rows=row.bad_rows,
            attempts=row.attempts, created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at,
        )  # fmt: skip


@strawberry.input(description="What to export, under which agreement.")
class ExportRequestInput:
    agreement_id: strawberry.ID
    dataset_version_id: strawberry.ID
    distribution_id: strawberry.ID | None = strawberry.field(
        default=None, description="A CSV or Parquet file of the version; omit for its batches with QC results"
    )
    columns: list[str] | None = strawberry.field(default=None, description="Omit for every column the policy allows")
    filter: JSON | None = strawberry.field(
        default=None, description="[{column, op, value}] ANDed, on exported values; op: eq ne lt le gt ge in "
        "is_null not_null"
    )  # fmt: skip
    bad_rows: BadRows = strawberry.field(
        default=models.BadRows.fail, description="fail: a malformed row fails the job; quarantine: it is set aside"
    )


@strawberry.type(description="A presigned GET for an export's Parquet file.")
class ExportDownloadUrl:
    export: Export
    url: str
    expires_at: datetime


@strawberry.type
class ExportsQuery:
    @strawberry.field(description="One of your institution's exports; null when missing or not yours.")
    async def export(self, info: strawberry.Info, id: strawberry.ID) -> Export | None:
        key = info.context.ids.key_of(id, "Export", "id")
        try:
            row = await info.context.read(service.get_export, info.context.principal, key)
        except NotFound:
            return None
        return Export.of(row)

    @strawberry.field(description="Your institution's exports, newest first.")
    async def my_exports(self, info: strawberry.Info, first: int = 20) -> list[Export]:
        rows = await info.context.read(service.list_exports, info.context.principal, max(1, min(first, 100)))
        return [Export.of(row) for row in rows]


@strawberry.type
class ExportsMutation:
    @strawberry.mutation(
        description="Queue a Parquet export of a dataset version under an agreement your institution holds: the "
        "agreement's policy drops, generalises and pseudonymises columns, and the file carries its terms."
    )
    async def request_export(self, info: strawberry.Info, input: ExportRequestInput) -> Export:
        info.context.signed_in("request exports")
        agreement = info.context.ids.key_of(input.agreement_id, "Agreement", "input.agreementId")
        version = info.context.ids.key_of(input.dataset_version_id, "DatasetVersion", "input.datasetVersionId")
        distribution = _optional_key(info, input.distribution_id, "Distribution", "input.distributionId")
        settings = info.context.settings

        async def work(session, principal):
            return await service.request_export(
                session, settings, principal, agreement_id=agreement, dataset_version_id=version,
                distribution_id=distribution, columns=input.columns, row_filter=input.filter,
                bad_rows=models.BadRows(input.bad_rows),
            )  # fmt: skip

        return Export.of(await info.context.committed(work))

    @strawberry.mutation(
        description="A presigned GET for a succeeded export, valid expiresIn seconds (1-900, default 300), only "
        "while its agreement is in force. Audited."
    )
    async def export_download_url(
        self, info: strawberry.Info, id: strawberry.ID, expires_in: int = DEFAULT_EXPIRY
    ) -> ExportDownloadUrl:
        key = info.context.ids.key_of(id, "Export", "id")
        settings = info.context.settings

        async def work(session, principal):
            store = ObjectStore.shared(settings)
            return await service.issue_export_download_url(session, store, settings, principal, key, expires_in)

        issued = await info.context.committed(work)
        return ExportDownloadUrl(export=Export.of(issued.export), url=issued.url, expires_at=issued.expires_at)


def _optional_key(info: strawberry.Info, global_id: str | None, type_name: str, field: str) -> uuid.UUID | None:
    return None if global_id is None else info.context.ids.key_of(global_id, type_name, field)
