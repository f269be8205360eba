"""The filedrop connector and files it cannot wholly read: a CSV file that is not UTF-8, a cell too large.

A row that cannot be read is quarantined with a finding naming the file, the line and the reason; the file's
other rows and the other files still land."""

from __future__ import annotations

import json

from sqlalchemy import select
from tests.sync.test_filedrop import MAPPING, PREFIX, add_filedrop, csv_bytes, put, rows

from cellcommons.sync.models import QuarantinedRecord, RunStatus
from cellcommons.sync.runtime import SyncRuntime
from cellcommons_connectors.filedrop import FIELD_LIMIT


async def held_records(env) -> list[QuarantinedRecord]:
    async with env.database.unit_of_work() as session:
        return list(await session.scalars(select(QuarantinedRecord).order_by(QuarantinedRecord.record_key)))


async def test_cp1252_rows_are_held_where_a_mapped_cell_is_not_utf8_and_the_rest_lands(env, object_store, bucket):
    put(object_store, bucket, PREFIX + "mapping.json", json.dumps(MAPPING).encode())
    lines = rows("A", 4)
    lines[1][1] = "BM-MSC Müller"  # a mapped column (Product): the row cannot be trusted
    lines[2][6] = "Jürgen"  # only the Operator column, which the mapping ignores: the row lands
    put(object_store, bucket, PREFIX + "a.csv", csv_bytes(lines).decode().encode("cp1252"))  # Excel's "CSV"
    put(object_store, bucket, PREFIX + "b.csv", csv_bytes(rows("B", 2)))  # a good file after it
    await add_filedrop(env, bucket)
    runtime = SyncRuntime(env.database, env.settings)

    run = await runtime.run("lims")
    assert (run.status, run.error, run.read_count, run.quarantined_count) == (RunStatus.partial, None, 6, 1)
    assert await env.lots() == ["A-0", "A-2", "A-3", "B-0", "B-1"]
    [held] = await held_records(env)
    assert (held.record_key, held.payload) == ("A-1", {"lot_number": "A-1"})  # its key only: see the replay
    assert held.errors == [{
        "code": "unreadable_row", "severity": "error", "field": "Product",
        "message": f"{PREFIX}a.csv line 3: column Product is not UTF-8 text (save the file as UTF-8)",
    }]  # fmt: skip

    assert (await runtime.run("lims")).read_count == 0  # read once, like any file: replacing it reads it again
    replay = await runtime.replay_quarantine("lims")
    assert (replay.upserted_count, replay.quarantined_count) == (0, 1)  # no garbled product name lands
    assert "A-1" not in await env.lots()


async def test_a_csv_whose_header_is_not_utf8_where_mapped_fails_the_run_naming_the_file(env, object_store, bucket):
    mapping = MAPPING | {"columns": MAPPING["columns"] | {"Opérateur": "cryoprotectant"}}
    put(object_store, bucket, PREFIX + "mapping.json", json.dumps(mapping).encode())
    text = csv_bytes(rows("A", 2)).decode().replace("Operator", "Opérateur", 1)
    put(object_store, bucket, PREFIX + "a.csv", text.encode("cp1252"))
    await add_filedrop(env, bucket)
    run = await SyncRuntime(env.database, env.settings).run("lims")
    assert run.status is RunStatus.failed
    assert (
        run.error == f"SourceError: {PREFIX}a.csv lacks the mapped column(s) Opérateur (its header is not UTF-8 text)"
    )


async def test_a_cell_under_the_limit_lands_and_one_over_it_is_held_naming_the_line(env, object_store, bucket):
    put(object_store, bucket, PREFIX + "mapping.json", json.dumps(MAPPING).encode())
    long = rows("C", 3)
    long[1][6] = "x" * 200_000  # an operator's note past Python's own limit (131 072), in an ignored column
    put(object_store, bucket, PREFIX + "c.csv", csv_bytes(long))
    huge = rows("D", 3)
    huge[1][6] = "a note\n" * (FIELD_LIMIT // 7 + 1)  # quoted over many lines: the row starts at line 3
    put(object_store, bucket, PREFIX + "d.csv", csv_bytes(huge))
    put(object_store, bucket, PREFIX + "e.csv", csv_bytes(rows("E", 2)))  # a good file after it
    await add_filedrop(env, bucket)
    runtime = SyncRuntime(env.database, env.settings)

    run = await runtime.run("lims")
    assert (run.status, run.error, run.quarantined_count) == (RunStatus.partial, None, 1)
    assert await env.lots() == ["C-0", "C-1", "C-2", "D-0", "E-0", "E-1"]
    [held] = await held_records(env)
    assert (held.record_key, held.payload) == (None, {})  # nothing of the row was read
    assert held.errors == [{
        "code": "unreadable_row", "severity": "error", "field": "",
        "message": f"{PREFIX}d.csv line 3: a cell over {FIELD_LIMIT} characters; the rows after it are not read"
                   " until the file is replaced (a quote left open makes one cell of every line after it)",
    }]  # fmt: skip
    assert (await runtime.run("lims")).read_count == 0


async def test_a_quote_left_open_is_held_naming_its_line_not_read_as_one_last_cell(env, object_store, bucket):
    """Python's reader takes the end of the file inside a quote as the end of one cell: every row after the
    quote would silently go."""
    put(object_store, bucket, PREFIX + "mapping.json", json.dumps(MAPPING).encode())
    text = csv_bytes(rows("Q", 50)).decode().splitlines(keepends=True)
    text[3] = text[3].rstrip("\r\n") + ',"jd\r\n'  # an operator's note opening a quote it never closes, line 4
    put(object_store, bucket, PREFIX + "q.csv", "".join(text).encode())
    await add_filedrop(env, bucket)
    run = await SyncRuntime(env.database, env.settings).run("lims")
    assert (run.status, run.quarantined_count) == (RunStatus.partial, 1)
    assert await env.lots() == ["Q-0", "Q-1"]
    [held] = await held_records(env)
    assert held.errors[0]["message"] == (
        f"{PREFIX}q.csv line 4: a quote opened in this row is never closed; the rows after it are not read until"
        " the file is replaced"
    )
