"""The `filedrop` connector: batch records dropped as CSV, XLSX or Parquet files under an S3 prefix.

GMP batch records and LIMS exports arrive this way. Each file is read once, recognised by its ETag (a file
replaced under the same name has a new ETag and is read again); the bookmark names the files done and how
far into the current one the last committed page reached, so a crash resumes inside the file. Rows are
streamed (CSV straight from S3; XLSX and Parquet through a temporary file, since both need to seek), so
memory stays flat whatever the file's size.

A column-mapping file (JSON, `mapping` in the source's configuration; default `<prefix>mapping.json`) says
which file column feeds which catalogue field; columns it does not name are ignored:

    {"columns": {"Lot": "lot_number", "Product": "product_name", "Cell type": "cell_type", ...},
     "constants": {"cell_type": "CL:0010020"},
     "qc_results": [{"fields": {"test_type": "viability", "timepoint": "post_thaw", "unit": "%"},
                     "columns": {"value": "Viability (%)", "passed": "Viability pass"}}],
     "updated_at": "Last modified", "deleted": "Withdrawn", "list_separator": ";"}

Each `qc_results` entry turns a group of columns of the row into one QC result (empty columns: no result).
`updated_at` names the column with the record's last-modified time (default: the file's), `deleted` a column
that marks a row as withdrawn (a tombstone). Source configuration: `bucket`, `prefix`, optionally `mapping`,
and `endpoint` (+ secrets `access_key`, `secret_key`) for a bucket outside the platform's object storage.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import pyarrow.parquet as pq
from minio import Minio
from openpyxl import load_workbook
from pydantic import BaseModel, ConfigDict, ValidationError

from cellcommons.catalogue.schemas import BatchIn
from cellcommons.errors import InvalidInput
from cellcommons.storage import ObjectStore
from cellcommons.sync.sdk import (
    Bookmark,
    Connector,
    Page,
    Record,
    SourceError,
    Stream,
    pages_in_thread,
    parse_timestamp,
)

PAGE_SIZE = 1000
SUFFIXES = (".csv", ".xlsx", ".parquet")
# Fields that take a list: a file cell holds them joined by the mapping's separator.
LIST_FIELDS = {"clinical_trial_ids"}
TRUE = {"1", "true", "yes", "y", "x"}


class QcColumns(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: dict[str, Any] = {}
    columns: dict[str, str]


class Mapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    columns: dict[str, str]
    constants: dict[str, Any] = {}
    qc_results: list[QcColumns] = []
    updated_at: str | None = None
    deleted: str | None = None
    list_separator: str = ";"

    def needed(self) -> set[str]:
        named = set(self.columns) | {c for qc in self.qc_results for c in qc.columns.values()}
        return named | {c for c in (self.updated_at, self.deleted) if c}


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
        try:
            response = client.get_object(self.bucket, self.mapping_key)
            try:
                mapping = Mapping.model_validate(json.loads(response.read()))
            finally:
                response.close()
                response.release_conn()
        except ValidationError as exc:
            problem = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in problem["loc"])
            raise InvalidInput(f"mapping file {self.mapping_key}: {where}: {problem['msg']}", field="mapping") from None
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"mapping file {self.mapping_key} is not JSON: {exc}", field="mapping") from None
        unknown = sorted(set(mapping.columns.values()) - set(BatchIn.model_fields))
        if unknown:
            message = f"mapping file {self.mapping_key}: {', '.join(unknown)} are not batch fields"
            raise InvalidInput(message, field="mapping.columns")
        return mapping

    def _file_pages(self, client: Minio, mapping: Mapping, item, resume: int, done: dict) -> Iterator[Page]:
        key, etag = item.object_name, item.etag
        page: list[Record] = []
        row_number = resume
        for row_number, raw in enumerate(_rows(client, self.bucket, key, mapping), start=1):
            if row_number <= resume:
                continue
            page.append(_record(raw, mapping, item.last_modified))
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


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _record(raw: dict[str, Any], mapping: Mapping, file_modified: datetime | None) -> Record:
    data = {field: raw[column] for column, field in mapping.columns.items() if not _blank(raw.get(column))}
    for field, value in mapping.constants.items():
        data.setdefault(field, value)
    for field in LIST_FIELDS & data.keys():
        if isinstance(data[field], str):
            data[field] = [part.strip() for part in data[field].split(mapping.list_separator) if part.strip()]
    if mapping.qc_results:
        data["qc_results"] = [
            qc.fields | {f: raw[c] for f, c in qc.columns.items() if not _blank(raw.get(c))}
            for qc in mapping.qc_results
            if any(not _blank(raw.get(c)) for c in qc.columns.values())
        ]
    stamp = parse_timestamp(raw.get(mapping.updated_at), mapping.updated_at) if mapping.updated_at else file_modified
    deleted = mapping.deleted is not None and str(raw.get(mapping.deleted) or "").strip().lower() in TRUE
    return Record(data=data, updated_at=stamp, deleted=deleted)
