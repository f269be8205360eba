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
Source configuration: `bucket`, `prefix`, optionally `mapping`,
and `endpoint` (+ secrets `access_key`, `secret_key`) for a bucket outside the platform's object storage.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import AsyncIterator, Iterator
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
            page.append(mapping.record(raw, item.last_modified))
            if len(page) == PAGE_SIZE:
                yield Page(page, {"done": dict(done), "current": {"key": key, "etag": etag, "row": row_number}})
                page = []
        done[key] = etag
        yield Page(page, {"done": dict(done), "current": None})


def _rows(client: Minio, bucket: str, key: str, mapping: Mapping) -> Iterator[dict[str, Any]]:
    suffix = key.lower().rsplit(".", 1)[-1]
    if suffix == "csv":
        rows = _csv_rows(client, bucket, key)
    else:
        rows = _spooled_rows(client, bucket, key, _xlsx_rows if suffix == "xlsx" else _parquet_rows)
    first = next(rows, None)
    if first is None:
        return
    missing = sorted(mapping.needed() - set(first))
    if missing:
        raise SourceError(f"{key} lacks the mapped column(s) {', '.join(missing)}")
    yield first
    yield from rows


def _csv_rows(client: Minio, bucket: str, key: str) -> Iterator[dict[str, Any]]:
    response = client.get_object(bucket, key)
    response.auto_close = False  # else urllib3 closes it at the end of the body, under TextIOWrapper's feet
    try:
        yield from csv.DictReader(io.TextIOWrapper(response, encoding="utf-8-sig", newline=""))
    finally:
        response.close()
        response.release_conn()


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
