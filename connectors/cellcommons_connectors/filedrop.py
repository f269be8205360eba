"""The `filedrop` connector: batch records dropped as CSV, XLSX or Parquet files under an S3 prefix.

GMP batch records and LIMS exports arrive this way. Each file is read once, recognised by its ETag (a file
replaced under the same name has a new ETag and is read again); the bookmark names the files done and how
far into the current one the last committed page reached, so a crash resumes inside the file. Rows are
streamed (CSV straight from S3; XLSX and Parquet through a temporary file, since both need to seek), so
memory stays flat whatever the file's size.

A column-mapping file (JSON, `mapping` in the source's configuration; default `<prefix>mapping.json`) says
which file column feeds which catalogue field, with enum and unit conversions (the shared mapping of
`cellcommons_connectors.mapping`; columns it does not name are ignored). Without an `updated_at` column a
row's time is its file's last-modified time.
A row that cannot be read (a CSV row whose mapped cells are not UTF-8, a cell over `FIELD_LIMIT` characters) is
quarantined with a finding naming the file, the line and the reason; the other rows and files still land. A
file lacking a mapped column fails the run: the mapping or the file's layout is wrong, not one row.
Source configuration: `bucket`, `prefix`, optionally `mapping`,
and `endpoint` (+ secrets `access_key`, `secret_key`) for a bucket outside the platform's object storage.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any

import pyarrow.parquet as pq
from minio import Minio
from openpyxl import load_workbook

from cellcommons.catalogue.schemas import BatchIn
from cellcommons.errors import InvalidInput
from cellcommons.storage import ObjectStore
from cellcommons.sync.sdk import Bookmark, Connector, Page, Record, SourceError, Stream, pages_in_thread
from cellcommons_connectors.mapping import Mapping, parse_mapping

PAGE_SIZE = 1000
SUFFIXES = (".csv", ".xlsx", ".parquet")
UNREADABLE_ROW = "unreadable_row"  # a finding's code: a row of a file could not be read
# Characters in one CSV cell. Python's own limit (131 072) refuses an operator's long note in a column the mapping
# ignores; no batch field holds more than 20 000, so a cell of a million characters is a quote left open
# (swallowing every line after it) or no batch record. The limit is the csv module's, for the whole process: the
# other readers in it (castor's, the ontology's) read smaller cells and rely on no lower limit.
FIELD_LIMIT = 1 << 20
csv.field_size_limit(FIELD_LIMIT)
# Bytes that were not UTF-8, kept by the decoder (errors="surrogateescape") as lone surrogates U+DC80..U+DCFF.
NOT_UTF8 = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True)
class Unreadable:
    """A row of a file that could not be read: where it is, the column at fault (when known), why, and what of
    it was read."""

    where: str
    column: str
    reason: str
    values: dict[str, Any] = field(default_factory=dict)


class BatchFiles(Stream):
    name = "batches"
    target = "batch"
    natural_key = ("lot_number",)
    schema = BatchIn

    def __init__(self, connector: FileDrop):
        self.connector = connector

    def read_pages(self, bookmark: Bookmark) -> AsyncIterator[Page]:
        return pages_in_thread(self.connector.pages(bookmark))


class FileDrop(Connector):
    required_config = ("bucket", "prefix")

    def streams(self) -> list[Stream]:
        return [BatchFiles(self)]

    @property
    def bucket(self) -> str:
        return self.context.config["bucket"]

    @property
    def prefix(self) -> str:
        return self.context.config["prefix"]

    @property
    def mapping_key(self) -> str:
        return self.context.config.get("mapping") or f"{self.prefix}mapping.json"

    def client(self) -> Minio:
        config, secrets = self.context.config, self.context.secrets
        if "endpoint" not in config:
            return ObjectStore.from_settings(self.context.settings).client
        return Minio(config["endpoint"], access_key=secrets.get("access_key"), secret_key=secrets.get("secret_key"),
                     secure=str(config.get("secure", "true")).lower() == "true")  # fmt: skip

    def pages(self, bookmark: Bookmark) -> Iterator[Page]:
        client = self.client()
        mapping = self._mapping(client)
        done = dict((bookmark or {}).get("done", {}))
        current = (bookmark or {}).get("current") or {}
        for item in self._files(client):
            if done.get(item.object_name) == item.etag:
                continue
            same_file = (current.get("key"), current.get("etag")) == (item.object_name, item.etag)
            resume = current.get("row", 0) if same_file else 0
            yield from self._file_pages(client, mapping, item, resume, done)

    def _files(self, client: Minio) -> list:
        listed = client.list_objects(self.bucket, prefix=self.prefix, recursive=True)
        found = [o for o in listed if o.object_name != self.mapping_key and o.object_name.lower().endswith(SUFFIXES)]
        return sorted(found, key=lambda o: o.object_name)

    def _mapping(self, client: Minio) -> Mapping:
        response = client.get_object(self.bucket, self.mapping_key)
        try:
            body = response.read()
        finally:
            response.close()
            response.release_conn()
        try:
            content = json.loads(body)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"mapping file {self.mapping_key} is not JSON: {exc}", field="mapping") from None
        return parse_mapping(content, f"file {self.mapping_key}")

    def _file_pages(self, client: Minio, mapping: Mapping, item, resume: int, done: dict) -> Iterator[Page]:
        key, etag = item.object_name, item.etag
        page: list[Record] = []
        row_number = resume
        for row_number, raw in enumerate(_rows(client, self.bucket, key, mapping), start=1):
            if row_number <= resume:
                continue
            page.append(_record(mapping, item, raw))
            if len(page) == PAGE_SIZE:
                yield Page(page, {"done": dict(done), "current": {"key": key, "etag": etag, "row": row_number}})
                page = []
        done[key] = etag
        yield Page(page, {"done": dict(done), "current": None})


def _record(mapping: Mapping, item, row: dict[str, Any] | Unreadable) -> Record:
    if isinstance(row, Unreadable):
        return _held(mapping, item.object_name, row)
    return mapping.record(row, item.last_modified)


def _held(mapping: Mapping, key: str, row: Unreadable) -> Record:
    """The record quarantined for a row that could not be read. Its data is the row's key alone (when that was
    read): a quarantine replay validates the data, not the finding, and a key alone is no batch, so only reading
    the file again (once replaced) lands the row."""
    mapped = mapping.record({c: v for c, v in row.values.items() if not _not_utf8(v)}).data
    data = {name: mapped[name] for name in BatchFiles.natural_key if name in mapped}
    finding = {
        "code": UNREADABLE_ROW,
        "severity": "error",
        "field": row.column,
        "message": f"{key} {row.where}: {row.reason}",
    }
    return Record(data, findings=(finding,))


def _rows(client: Minio, bucket: str, key: str, mapping: Mapping) -> Iterator[dict[str, Any] | Unreadable]:
    suffix = key.lower().rsplit(".", 1)[-1]
    if suffix == "csv":
        rows = _csv_rows(client, bucket, key, mapping.needed())
    else:
        rows = _spooled_rows(client, bucket, key, _xlsx_rows if suffix == "xlsx" else _parquet_rows)
    first = next(rows, None)
    if first is None:
        return
    columns = first.values if isinstance(first, Unreadable) else first
    if columns:  # a first row too large to read says nothing of the columns
        _check_columns(key, mapping, columns)
    yield first
    yield from rows


def _check_columns(key: str, mapping: Mapping, columns: dict[str, Any]) -> None:
    missing = sorted(mapping.needed() - set(columns))
    if missing:
        hint = " (its header is not UTF-8 text)" if any(_not_utf8(name) for name in columns) else ""
        raise SourceError(f"{key} lacks the mapped column(s) {', '.join(missing)}{hint}")


def _csv_rows(client: Minio, bucket: str, key: str, mapped: set[str]) -> Iterator[dict[str, Any] | Unreadable]:
    response = client.get_object(bucket, key)
    response.auto_close = False  # else urllib3 closes it at the end of the body, under TextIOWrapper's feet
    try:
        # Bytes that are not UTF-8 (Excel's cp1252 "CSV") are kept, escaped, to be found in the row they are in:
        # the decoder reads ahead of the rows, so its own error could name neither the row nor the line.
        text = io.TextIOWrapper(response, encoding="utf-8-sig", errors="surrogateescape", newline="")
        # Strict: a file ending inside a quote is an error, not one last cell swallowing every line after the quote.
        yield from _csv_records(csv.reader(text, strict=True), mapped)
    finally:
        response.close()
        response.release_conn()


def _csv_records(reader, mapped: set[str]) -> Iterator[dict[str, Any] | Unreadable]:
    """The rows under the header, each a dict by column (as csv.DictReader's: a short row's missing cells are
    None), or Unreadable. A row the parser refuses ends the file: where the next row starts is then unknown."""
    end = 0  # the line the last row read ends on
    try:
        header = next(reader, [])
        end = reader.line_num
        checked = [column for column in header if column in mapped]
        for values in reader:
            start, end = end + 1, reader.line_num
            if values:  # not a blank line
                yield _readable(dict(zip_longest(header, values)), checked, _lines(start, end))
    except csv.Error as exc:
        yield Unreadable(f"line {end + 1}", "", _refusal(exc))


def _readable(row: dict[str, Any], checked: list[str], where: str) -> dict[str, Any] | Unreadable:
    """The row, or Unreadable when a cell the mapping reads is not UTF-8 (other cells are never read)."""
    for column in checked:
        if _not_utf8(row[column]):
            return Unreadable(where, column, f"column {column} is not UTF-8 text (save the file as UTF-8)", row)
    return row


def _not_utf8(value: object) -> bool:
    # isascii is a flag lookup: the search runs only on the few cells with other characters
    return isinstance(value, str) and not value.isascii() and NOT_UTF8.search(value) is not None


def _lines(start: int, end: int) -> str:
    return f"line {start}" if start == end else f"lines {start}–{end}"


UNREAD_REST = "; the rows after it are not read until the file is replaced"


def _refusal(exc: csv.Error) -> str:
    if "unexpected end of data" in str(exc):
        return f"a quote opened in this row is never closed{UNREAD_REST}"
    if "field limit" in str(exc):
        hint = "a quote left open makes one cell of every line after it"
        return f"a cell over {FIELD_LIMIT} characters{UNREAD_REST} ({hint})"
    return f"not CSV ({exc}){UNREAD_REST}"


def _spooled_rows(client: Minio, bucket: str, key: str, reader) -> Iterator[dict[str, Any]]:
    with tempfile.NamedTemporaryFile(suffix="-" + key.rsplit("/", 1)[-1]) as spool:
        client.fget_object(bucket, key, spool.name)
        yield from reader(spool.name)


def _xlsx_rows(path: str) -> Iterator[dict[str, Any]]:
    workbook = load_workbook(path, read_only=True, data_only=True)
    try:
        rows = workbook.worksheets[0].iter_rows(values_only=True)
        header = [str(c).strip() if c is not None else "" for c in next(rows, ())]
        for values in rows:
            if any(v not in (None, "") for v in values):
                yield dict(zip(header, values, strict=False))
    finally:
        workbook.close()


def _parquet_rows(path: str) -> Iterator[dict[str, Any]]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=PAGE_SIZE):
        yield from batch.to_pylist()
