"""GraphQL: sync sources and their run history, for the owning institution's stewards and institution admins."""

from __future__ import annotations

from datetime import datetime

import strawberry

from cellcommons.graphql.connection import Connection, page_request, sql_connection
from cellcommons.sync import models, repository

SyncRunStatus = strawberry.enum(models.RunStatus, name="SyncRunStatus")
SyncRunTrigger = strawberry.enum(models.RunTrigger, name="SyncRunTrigger")


@strawberry.type(description="A scheduled sync source of your institution (its secrets are never shown).")
class SyncSource:
    name: str
    connector: str
    schedule: str = strawberry.field(description="Five-field cron expression, UTC.")
    enabled: bool
    next_run_at: datetime | None
    consecutive_failures: int
    breaker_open_until: datetime | None = strawberry.field(description="While set and ahead, runs are held back.")

    @classmethod
    def of(cls, row: models.SyncSource) -> SyncSource:
        return cls(
            name=row.name, connector=row.connector, schedule=row.schedule, enabled=row.enabled,
            next_run_at=row.next_run_at, consecutive_failures=row.consecutive_failures,
            breaker_open_until=row.breaker_open_until,
        )  # fmt: skip


@strawberry.type(description="One run of a sync source, with what it read and did.")
class SyncRun:
    status: SyncRunStatus
    trigger: SyncRunTrigger
    started_at: datetime
    finished_at: datetime | None
    read: int
    upserted: int
    quarantined: int
    deleted: int
    error: str | None

    @classmethod
    def of(cls, row: models.SyncRun) -> SyncRun:
        return cls(
            status=row.status, trigger=row.trigger, started_at=row.created_at, finished_at=row.finished_at,
            read=row.read_count, upserted=row.upserted_count, quarantined=row.quarantined_count,
            deleted=row.deleted_count, error=row.error,
        )  # fmt: skip


@strawberry.type
class SyncQuery:
    @strawberry.field(description="Your institution's sync sources (stewards and institution admins).")
    async def sync_sources(self, info: strawberry.Info) -> list[SyncSource]:
        rows = await info.context.read(repository.visible_sources, info.context.principal)
        return [SyncSource.of(row) for row in rows]

    @strawberry.field(description="A sync source's runs, oldest first; not_found for a source you may not see.")
    async def sync_runs(
        self,
        info: strawberry.Info,
        source: str,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[SyncRun]:
        request = page_request(info.context.ids, first, after, last, before)
        row = await info.context.read(repository.visible_source, info.context.principal, source)
        return await sql_connection(info.context, repository.runs_query(row.id), models.SyncRun, request, SyncRun.of)
