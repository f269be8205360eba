"""Audit appends (chain-head lock, hash, event and head in the caller's transaction) against plain INSERTs of the
same rows into a table of the same shape without chaining, one transaction per event, same database, same run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from rich.console import Console
from sqlalchemy import Column, MetaData, Table, insert, select, text

from bench.report import Measure, Report
from cellcommons.audit.models import AuditEvent
from cellcommons.audit.service import append
from cellcommons.audit.verify import verify_database
from cellcommons.db import Database, make_engine
from cellcommons.demo.scratch import ScratchStack
from cellcommons.settings import Settings

WRITERS = 8
REPEAT = 3
PLAIN = Table("bench_plain_event", MetaData(), *(Column(c.name, c.type) for c in AuditEvent.__table__.columns))


def run(stack: ScratchStack, quick: bool, console: Console) -> Report:
    settings = stack.new_database()
    single, concurrent = (100, 200) if quick else (1000, 2000)
    with console.status("measuring audit appends…"):
        report = asyncio.run(_measure(settings, single, concurrent))
    stack.drop(settings)
    return report


async def _measure(settings: Settings, single: int, concurrent: int) -> Report:
    owner = make_engine(settings.owner_url)
    async with owner.begin() as conn:
        # Same columns, key and checks as the log; no triggers, no chain head.
        await conn.execute(text(f"CREATE TABLE {PLAIN.name} (LIKE audit_event INCLUDING ALL)"))
    await owner.dispose()
    writers = [Database(settings) for _ in range(WRITERS)]
    try:
        one_audit, one_plain = await _best(writers[:1], single)
        many_audit, many_plain = await _best(writers, concurrent)
    finally:
        for database in writers:
            await database.dispose()
    verify_rate, stream_rate, verified = await _verify_rates(settings)
    return Report(
        "audit",
        measures=[
            Measure("append, 1 writer", one_audit, one_plain, "events/s", "plain INSERT", target=0.5),
            Measure(f"append, {WRITERS} writers", many_audit, many_plain, "events/s", "plain INSERT"),
            Measure("verify (streamed)", verify_rate, stream_rate, "events/s", "stream rows, no hashing"),
        ],
        notes=[
            f"one transaction per event; {single} events for 1 writer, {concurrent} for {WRITERS} writers "
            f"(separate connections), best of {REPEAT}",
            f"chain intact: {'yes' if verified.intact else 'no'} ({verified.summary()})",
        ],
    )


async def _best(writers: list[Database], count: int) -> tuple[float, float]:
    """Best rate of appends and of plain INSERTs of the rows those appends wrote, interleaved."""
    best_audit = best_plain = 0.0
    for _ in range(REPEAT):
        start = await _last_id(writers[0])
        best_audit = max(best_audit, await _rate(writers, count, _appender))
        rows = await _rows_after(writers[0], start)
        best_plain = max(best_plain, await _rate(writers, count, _plain_inserter(rows)))
    return best_audit, best_plain


async def _rate(writers: list[Database], count: int, work: Callable[[Database, int, int], Awaitable[None]]) -> float:
    share = count // len(writers)
    begin = time.perf_counter()
    await asyncio.gather(*(work(database, n * share, share) for n, database in enumerate(writers)))
    return share * len(writers) / (time.perf_counter() - begin)


async def _appender(database: Database, first: int, count: int) -> None:
    for i in range(first, first + count):
        async with database.unit_of_work() as session:
            await append(
                session,
                actor=f"client:bench-{first}",
                institution="lumc",
                action="batch.update",
                target=f"batch:{i}",
                details={"i": i, "field": "viability", "value": 93.5},
            )


def _plain_inserter(rows: list[dict]) -> Callable[[Database, int, int], Awaitable[None]]:
    async def work(database: Database, first: int, count: int) -> None:
        for row in rows[first : first + count]:
            async with database.unit_of_work() as session:
                await session.execute(insert(PLAIN).values(row))

    return work


async def _last_id(database: Database) -> int:
    async with database.unit_of_work() as session:
        return (await session.execute(text("SELECT coalesce(max(id), 0) FROM audit_event"))).scalar_one()


async def _rows_after(database: Database, start: int) -> list[dict]:
    async with database.unit_of_work() as session:
        result = await session.execute(select(AuditEvent.__table__).where(AuditEvent.id > start).order_by("id"))
        return [dict(row) for row in result.mappings()]


async def _verify_rates(settings: Settings):
    begin = time.perf_counter()
    verified = await verify_database(settings)
    verify_rate = verified.count / (time.perf_counter() - begin)
    database = Database(settings)
    try:
        begin = time.perf_counter()
        async with database.unit_of_work() as session:
            rows = await session.stream(select(AuditEvent.__table__).execution_options(yield_per=1000))
            streamed = sum([1 async for _ in rows])
        stream_rate = streamed / (time.perf_counter() - begin)
    finally:
        await database.dispose()
    return verify_rate, stream_rate, verified
