"""Registering sync sources and reading their state (runs, quarantine). Flushes; the caller commits."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.catalogue.models import Institution
from cellcommons.errors import CellCommonsError, Conflict, InvalidInput, NotFound
from cellcommons.settings import Settings
from cellcommons.sync import repository
from cellcommons.sync.models import QuarantinedRecord, SyncSource
from cellcommons.sync.schedule import check_schedule, next_fire
from cellcommons.sync.sdk import Connector, ConnectorContext, connector_class
from cellcommons.sync.secrets import redact, seal

NAME_RULE = "must start with a letter and hold 2–60 lowercase letters, digits or '-'"


async def add_source(
    session: AsyncSession,
    settings: Settings,
    *,
    name: str,
    connector: str,
    institution_slug: str,
    schedule: str,
    config: dict[str, str],
    secrets: dict[str, str],
) -> SyncSource:
    """A new source of an institution; its secrets are sealed before they reach the database."""
    if not (2 <= len(name) <= 60 and name[0].isalpha() and all(c.islower() or c.isdigit() or c == "-" for c in name)):
        raise InvalidInput(f"source name {name!r} {NAME_RULE}", field="name")
    schedule = check_schedule(schedule)
    kind = connector_class(connector)
    missing = [key for key in kind.required_config if key not in config]
    if missing:
        raise InvalidInput(f"connector {connector!r} needs configuration {', '.join(missing)}", field="config")
    await _check_configuration(kind, ConnectorContext(name, config, secrets, settings))
    institution_id = await session.scalar(select(Institution.id).where(Institution.slug == institution_slug))
    if institution_id is None:
        raise NotFound(f"no institution {institution_slug!r}", field="institution")
    if await session.scalar(select(SyncSource.id).where(SyncSource.name == name)):
        raise Conflict(f"a sync source named {name!r} exists", field="name")
    source = SyncSource(
        name=name, connector=connector, institution_id=institution_id, config=config,
        sealed_secrets=seal(settings, name, secrets), schedule=schedule,
        next_run_at=next_fire(schedule, datetime.now(UTC)),
    )  # fmt: skip
    session.add(source)
    await session.flush()
    return source


async def _check_configuration(kind: type[Connector], context: ConnectorContext) -> None:
    """Build the connector as each run will: its own checks (the mapping parsed, page sizes, time zone, the secrets
    it needs) refuse a bad source now, naming the option, rather than fail every run of it."""
    try:
        connector = kind(context)
    except CellCommonsError:
        raise
    except Exception as exc:  # a third-party connector's own complaint (never quoting a secret)
        message = f"the connector refused the configuration of source {context.source!r}: {type(exc).__name__}: {exc}"
        raise InvalidInput(redact(message, context.secrets), field="config") from None
    await connector.close()


async def list_sources(session: AsyncSession) -> list[tuple[str, SyncSource]]:
    rows = await session.execute(
        select(Institution.slug, SyncSource)
        .join(Institution, Institution.id == SyncSource.institution_id)
        .order_by(SyncSource.name)
    )
    return [tuple(row) for row in rows]


async def open_quarantine(session: AsyncSession, source_name: str, limit: int) -> list[QuarantinedRecord]:
    source = await repository.source_by_name(session, source_name)
    return await repository.open_quarantine(session, source.id, None, limit)
