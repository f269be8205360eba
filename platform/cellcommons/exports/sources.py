"""Where export rows come from, as record batches in their declared types, in bounded memory.

- A tabular distribution in object storage. CSV streams through pyarrow's incremental reader straight from the
  GET (hashing the bytes as they pass; the SHA-256 is compared with the distribution's before the export's last
  part leaves, so a changed source aborts the upload). Every column is read as text and cast to its declared
  type per batch; when a cast fails, halving the batch finds the offending rows (a few casts each, still
  vectorised), so the error names line and column, or the rows are quarantined. Text is read as bytes and checked
  as UTF-8 the same way, row by row. Only an empty field is missing text; in other columns Arrow's markers of a
  missing value (`NA`, `null`, `NaN`, …) are missing too. A header naming a column the export reads twice is
  refused: which of the two would be read is not the file's to say. Parquet needs random access
  (its footer comes last), so it is spooled to a temporary file while hashed, then read by batches: a large one
  while it downloads (its footer fetched ahead; the SHA-256 compared before the last batch leaves), a small one
  once checked.
- The catalogue: the batches a dataset version links, one row per QC result (a batch without results keeps one
  row), with the tags below; read from PostgreSQL in partitions through a server-side cursor.

Line numbers count physical lines, the header being line 1, blank lines included (exact while values hold no
line breaks).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import logging
import os
import re
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import groupby

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.access.schemas import ColumnTreatment
from cellcommons.catalogue.models import Batch, QcResult, dataset_version_batch
from cellcommons.errors import InvalidInput, NotFound
from cellcommons.exports.arrays import same_values
from cellcommons.exports.errors import MalformedRow, SourceChanged, SourceMissing
from cellcommons.exports.models import BadRows
from cellcommons.exports.policy import ColumnPlan
from cellcommons.storage.object_store import ObjectStore

BATCH_ROWS = 65_536  # catalogue rows per batch (narrow); at most this many in a Parquet batch, sized by bytes
BATCH_BYTES = 2 * 1024 * 1024  # of decoded rows per batch: 4 MiB held ~10 MiB more at the peak, for no speed
CSV_BLOCK = 4 * 1024 * 1024
READ_BUFFER = 256 * 1024
# Text read as each row group's dictionary only from column chunks of at most this many bytes uncompressed
# (`_codable`): 1 M clinical rows of repeating text take 1–3 MiB (a dictionary page and narrow indices).
CODED_CHUNK_BYTES = 8 * 1024 * 1024
# A Parquet source is spooled in chunks under glibc's mmap threshold (1 MiB, see writer.return_freed_memory): each
# chunk of 1 MiB was a fresh mapping, faulted in page by page (24 000 faults, a third of the spooling's CPU at
# 5 M rows), where these reuse the heap. (A CSV source keeps the store's chunks: its batches follow them.)
SPOOL_CHUNK = 512 * 1024
# A Parquet source of at least this size is read while it downloads: its footer (Arrow reads it first) is fetched
# ahead with a range request for the last FOOTER_BYTES, and the spool is read as its bytes arrive, so decoding,
# the policy and the encoder no longer wait for the whole GET (5 M rows: some 0.2 s at the start).
READ_WHILE_DOWNLOADING = 8 * 1024 * 1024
FOOTER_BYTES = 256 * 1024
QUARANTINE_SAMPLE = 100
PARQUET_TYPES = {"application/vnd.apache.parquet", "application/x-parquet", "application/parquet"}
# What marks a missing number, date or flag in a CSV file (Arrow's defaults); in a text column only an empty field.
MISSING_MARKERS = pa.array(pcsv.ConvertOptions().null_values, pa.string())
_BLANK_LINE = re.compile(rb"\n(?=\r?\n)")  # a line break followed by an empty line
log = logging.getLogger(__name__)

# The catalogue source's columns: name, declared type, sensitivity tag.
CATALOGUE_COLUMNS: list[dict] = [
    dict(name=name, type=kind, sensitivity=tag)
    for name, kind, tag in [
        ("lot_number", "string", "plain"), ("product_name", "string", "plain"), ("cell_type", "string", "plain"),
        ("tissue", "string", "plain"), ("manufactured_on", "date", "quasi_identifier"),
        ("passage", "int32", "plain"), ("population_doublings", "decimal(6,2)", "plain"),
        ("culture_supplement", "string", "plain"), ("release_status", "string", "plain"),
        ("released_on", "date", "quasi_identifier"), ("expires_on", "date", "plain"),
        ("test_type", "string", "plain"), ("analyte", "string", "plain"), ("method", "string", "plain"),
        ("timepoint", "string", "plain"), ("result_status", "string", "plain"), ("value", "decimal(18,6)", "plain"),
        ("unit", "string", "plain"), ("qualitative", "string", "plain"), ("passed", "boolean", "plain"),
        ("tested_on", "date", "quasi_identifier"), ("lab", "string", "plain"),
    ]
]  # fmt: skip
_CATALOGUE_SELECT = [
    Batch.lot_number, Batch.product_name, Batch.cell_type, Batch.tissue, Batch.manufactured_on, Batch.passage,
    Batch.population_doublings, Batch.culture_supplement, Batch.release_status, Batch.released_on, Batch.expires_on,
    QcResult.test_type, QcResult.analyte, QcResult.method, QcResult.timepoint, QcResult.status, QcResult.value,
    QcResult.unit, QcResult.qualitative, QcResult.passed, QcResult.tested_on, QcResult.lab,
]  # fmt: skip


@dataclass(frozen=True)
class BadRow:
    line: int | None
    column: str | None
    reason: str

    def describe(self) -> str:
        where = f"line {self.line}" if self.line is not None else "a row"
        return f"{where}" + (f", column {self.column!r}" if self.column else "") + f": {self.reason}"


@dataclass
class Quarantine:
    """Bad rows: under `fail` the first one fails the job; under `quarantine` they are counted and set aside."""

    mode: BadRows
    count: int = 0
    sample: list[dict] = field(default_factory=list)

    def add(self, row: list[BadRow]) -> None:
        """One row's problems (a row bad in two columns is one row set aside, with both reasons)."""
        if self.mode is BadRows.fail:
            raise MalformedRow(row[0].describe(), field=row[0].column)
        self.count += 1
        for bad in row[: QUARANTINE_SAMPLE - len(self.sample)]:
            self.sample.append(asdict(bad))


class HashingReader(io.RawIOBase):
    """A file over an object's chunks that hashes what passes through it and notes its blank lines (the CSV
    reader skips them without a word, and they still count as lines)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._rest = b""
        self.digest = hashlib.sha256()
        self.blank_lines: list[int] = []  # physical line numbers, the first line being 1
        self._line_breaks = 0
        self._line_end = b""  # the previous chunk's last line break (and a "\r" after it): a blank line may follow

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._rest and not self._pull():
            return 0
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size

    def first_line(self) -> bytes:
        """The bytes before the first line break (read ahead, not consumed; at most a block's worth)."""
        while b"\n" not in self._rest and len(self._rest) < CSV_BLOCK and self._pull():
            pass
        return self._rest.split(b"\n", 1)[0]

    def _pull(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self.digest.update(chunk)
        self._note_blank_lines(chunk)
        self._rest += chunk
        return True

    def _note_blank_lines(self, chunk: bytes) -> None:
        text = self._line_end + chunk
        before = self._line_breaks - self._line_end.count(b"\n")
        for found in _BLANK_LINE.finditer(text):  # rare: one C search per chunk when there is none
            self.blank_lines.append(before + text.count(b"\n", 0, found.start()) + 2)
        self._line_breaks += chunk.count(b"\n")
        last = text.rfind(b"\n")
        self._line_end = text[last:] if last >= 0 and text[last:] in (b"\n", b"\n\r") else b""

    def drain(self) -> str:
        """Read to the end (the CSV reader may stop before trailing bytes) and return the SHA-256."""
        while self.read(CSV_BLOCK):
            pass
        return self.digest.hexdigest()


def _checked(actual: str, expected: str | None) -> None:
    if expected is not None and actual != expected:
        message = f"the source file's SHA-256 is {actual}, not the recorded {expected}: it changed since"
        raise SourceChanged(message, field="distributionId")


class _Lines:
    """Physical line numbers of the rows the CSV reader returns, given the lines it skipped (bad and blank)."""

    def __init__(self, blank: list[int]):
        self.skipped: list[int] = []
        self._blank = blank

    def of(self, row: int) -> int:
        line = row + 2  # after the header line
        for skipped in sorted(self.skipped + self._blank):
            if skipped > line:
                break
            line += 1
        return line


def _converted(values: pa.Array, kind: pa.DataType) -> pa.Array:
    """A CSV column's bytes in its declared type (raises where a value is not UTF-8 or not of the type)."""
    text = pc.cast(values, pa.string())
    if kind == pa.string():
        return text
    missing = pc.is_in(text, value_set=MISSING_MARKERS)
    return pc.cast(pc.if_else(missing, pa.scalar(None, pa.string()), text), kind)


def _failing(values: pa.Array, kind: pa.DataType, offset: int = 0) -> Iterator[int]:
    """Indices of the values that do not convert, found by halving (each step one vectorised conversion)."""
    try:
        _converted(values, kind)
        return
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if len(values) == 1:
            yield offset
            return
    half = len(values) // 2
    yield from _failing(values.slice(0, half), kind, offset)
    yield from _failing(values.slice(half), kind, offset + half)


def _reason(value: bytes, kind: pa.DataType) -> str:
    try:
        return f"{value.decode()!r} is not a valid {kind}"
    except UnicodeDecodeError:
        return f"{value!r} is not UTF-8 text"


def _typed(batch: pa.RecordBatch, plans: list[ColumnPlan], first_row: int, lines: _Lines):
    """The batch with every column in its declared type, without the rows that do not convert (reported)."""
    problems: list[BadRow] = []
    rejected: set[int] = set()
    for plan in plans:
        for index in _failing(batch.column(plan.name), plan.source_type):
            reason = _reason(batch.column(plan.name)[index].as_py(), plan.source_type)
            problems.append(BadRow(lines.of(first_row + index), plan.name, reason))
            rejected.add(index)
    if rejected:
        keep = pc.invert(pc.is_in(pa.array(range(batch.num_rows)), pa.array(sorted(rejected))))
        batch = batch.filter(keep)
    arrays = [_converted(batch.column(plan.name), plan.source_type) for plan in plans]
    return pa.RecordBatch.from_arrays(arrays, names=[plan.name for plan in plans]), problems


def _refuse_repeated_columns(header: bytes, names: list[str]) -> None:
    """Arrow reads the first of two columns of one name: refuse a header that names a read column twice."""
    found = next(csv.reader([header.decode("utf-8-sig", errors="replace").rstrip("\r")]), [])
    for name in names:
        if found.count(name) > 1:
            message = f"the CSV header names column {name!r} {found.count(name)} times"
            raise InvalidInput(message, field="distributionId")


def csv_batches(chunks: Iterator[bytes], plans: list[ColumnPlan], sha256: str | None, bad: Quarantine):
    reader = HashingReader(chunks)
    names = [plan.name for plan in plans]
    _refuse_repeated_columns(reader.first_line(), names)
    lines = _Lines(reader.blank_lines)
    structural: list[BadRow] = []

    def invalid(row) -> str:
        lines.skipped.append(row.number)
        structural.append(
            BadRow(row.number, None, f"expected {row.expected_columns} fields, found {row.actual_columns}")
        )
        return "skip"  # reported with the batch, in line order with the values that do not convert

    def report(problems: list[BadRow]) -> None:
        by_line = sorted(structural + problems, key=lambda row: row.line or 0)
        for _, row in groupby(by_line, key=lambda row: row.line):
            bad.add(list(row))
        structural.clear()

    try:
        stream = pcsv.open_csv(
            reader,
            read_options=pcsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK),
            parse_options=pcsv.ParseOptions(invalid_row_handler=invalid),
            convert_options=pcsv.ConvertOptions(
                column_types={name: pa.binary() for name in names}, include_columns=names,
                strings_can_be_null=True, null_values=[""],
            ),
        )  # fmt: skip

        def typed_batches() -> Iterator[pa.RecordBatch]:
            rows = 0
            for batch in stream:
                typed, problems = _typed(batch, plans, rows, lines)
                report(problems)
                yield typed
                rows += batch.num_rows

        yield from _gathered(typed_batches(), BATCH_BYTES)
    except (pa.ArrowInvalid, pa.ArrowKeyError) as exc:
        raise InvalidInput(f"the CSV file cannot be read: {exc}", field="distributionId") from None
    report([])
    _checked(reader.drain(), sha256)


def _gathered(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """Consecutive batches joined into ones of about `size` bytes. The CSV reader's batches are as small as its
    reads, one chunk of the GET (larger reads would be read ahead 32 blocks at a time, 100 MiB more at 4 MiB), and
    part of the policy's cost is per batch (a 1 MiB batch of donor ids is looked up among 50 000 known ones)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.nbytes
        if held >= size:
            yield pa.concat_batches(pending)
            pending, held = [], 0
    if pending:
        yield pa.concat_batches(pending)


def parquet_batches(
    chunks: Iterator[bytes], plans: list[ColumnPlan], sha256: str | None,
    footer: Callable[[], tuple[int, bytes] | None] | None = None,
) -> Iterator[pa.RecordBatch]:  # fmt: skip
    """Batches of a Parquet file. With `footer` (the object's size and last bytes, fetched ahead; None when the
    file is small or not Parquet) the batches are read while the rest downloads, each read waiting for its bytes,
    and the SHA-256 is compared once the download is done, before the last batch leaves. An error reading the file
    is reported only after that comparison, as without the footer: a changed source is named as such."""
    with tempfile.NamedTemporaryFile(prefix="cellcommons-export-") as spool:
        found = footer() if footer is not None else None
        if found is None:
            digest = hashlib.sha256()
            for chunk in chunks:
                digest.update(chunk)
                spool.write(chunk)
            spool.flush()
            _checked(digest.hexdigest(), sha256)
            yield from _decoded_batches(spool.name, plans)
            return
        arriving = _Arriving(spool.fileno(), *found, chunks)
        try:
            yield from _decoded_batches(arriving, plans)
        except GeneratorExit:
            raise
        except BaseException:
            arriving.verify(sha256)  # the download's own error or a changed source comes first
            raise
        else:
            arriving.verify(sha256)
        finally:
            arriving.stop()


def _decoded_batches(file: str | _Arriving, plans: list[ColumnPlan]) -> Iterator[pa.RecordBatch]:
    try:
        # Column chunks read READ_BUFFER at a time rather than whole (a row group of a million rows holds tens of
        # MiB). A spooled file is read by path, so Arrow reads into its own pool. Text is read as the file's
        # dictionary (one per row group, shared by its batches) where that is safe (`_codable`): the policy hashes
        # each donor id once per row group instead of finding them again in every batch, and the writer stores text
        # that repeats as it arrives, dictionary and indices, instead of decoding every row's value here and hashing
        # it again there.
        footer = pq.ParquetFile(file).metadata
        coded = _codable(footer, [plan.name for plan in plans if pa.types.is_string(plan.source_type)])
        source = pq.ParquetFile(file, metadata=footer, pre_buffer=False, buffer_size=READ_BUFFER, read_dictionary=coded)
    except pa.ArrowInvalid as exc:
        raise InvalidInput(f"the Parquet file cannot be read: {exc}", field="distributionId") from None
    present = source.schema_arrow.names
    for plan in plans:
        if plan.name not in present:
            raise InvalidInput(f"the Parquet file has no column {plan.name!r}", field="distributionId")
        if present.count(plan.name) > 1:  # which of them is the declared one is not the file's to say
            raise InvalidInput(f"the Parquet file has column {plan.name!r} more than once", field="distributionId")
    names = [plan.name for plan in plans]
    rows = _parquet_batch_rows(source, names)
    dense: set[str] | None = None  # text decoded after all, chosen on the first batch (the writer's types are fixed)
    dictionaries: dict[str, pa.Array] = {}
    # One thread: decoding the columns in parallel holds more of the row group at once, for little gain here.
    for batch in source.iter_batches(batch_size=rows, columns=names, use_threads=False):
        if dense is None:
            dense = {plan.name for plan in plans if _hardly_repeats(batch.column(plan.name), plan)}
        columns = [_shared(_cast(batch.column(p.name), p, p.name in dense), p.name, dictionaries) for p in plans]
        yield pa.RecordBatch.from_arrays(columns, names=names)


def _shared(values: pa.Array, name: str, dictionaries: dict[str, pa.Array]) -> pa.Array:
    """The column on the previous batch's dictionary when it is the same: Arrow's reader copies a row group's
    dictionary into every batch, and each batch waiting to be written would hold its own copy."""
    if not pa.types.is_dictionary(values.type):
        return values
    previous = dictionaries.get(name)
    if previous is not None and same_values(previous, values.dictionary):
        return pa.DictionaryArray.from_arrays(values.indices, previous)
    dictionaries[name] = values.dictionary
    return values


def _codable(footer: pq.FileMetaData, text: list[str]) -> list[str]:
    """The text columns whose every column chunk holds at most CODED_CHUNK_BYTES uncompressed. Where a chunk's
    pages are not dictionary-encoded (plain, or after its writer fell back to plain at a large dictionary), Arrow's
    reader builds the dictionary itself, of every value it reads, and holds it until the row group ends: bounded by
    the chunk's size so, instead of growing with the row group (2 M distinct barcodes in one: 676 MiB)."""
    if footer.num_row_groups == 0:
        return []
    first = footer.row_group(0)
    position = {first.column(index).path_in_schema: index for index in range(first.num_columns)}
    return [
        name
        for name in text
        if name in position
        and all(
            footer.row_group(group).column(position[name]).total_uncompressed_size <= CODED_CHUNK_BYTES
            for group in range(footer.num_row_groups)
        )
    ]


def _hardly_repeats(values: pa.Array, plan: ColumnPlan) -> bool:
    """Text with more distinct values than half the batch's rows (identifiers, free text): a dictionary would cost
    the writer more than the plain values. Donor ids to pseudonymise stay coded whatever their count."""
    coded = pa.types.is_dictionary(values.type) and plan.treatment is not ColumnTreatment.pseudonymise
    return coded and 2 * len(values.dictionary) > len(values)


class _Arriving(io.RawIOBase):
    """A Parquet source for Arrow's reader while it downloads into the spool (on a thread of its own, hashed on
    the way): a read waits until the download has passed the bytes it asks for, except reads of the file's last
    bytes (the footer, which Arrow reads first), served from what was fetched ahead. Reads come one at a time
    (Arrow's Python file takes a lock around each seek and read)."""

    def __init__(self, fd: int, size: int, tail: bytes, chunks: Iterator[bytes]):
        self._fd, self._size, self._tail, self._tail_at = fd, size, tail, size - len(tail)
        self._position = 0
        self._arrived = 0
        self._done = False
        self._error: BaseException | None = None
        self._digest = hashlib.sha256()
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._download, args=(chunks,), name="export-download", daemon=True)
        self._thread.start()

    def _download(self, chunks: Iterator[bytes]) -> None:
        try:
            for chunk in chunks:
                if self._stopping.is_set():
                    break
                self._digest.update(chunk)
                os.pwrite(self._fd, chunk, self._arrived)
                with self._changed:
                    self._arrived += len(chunk)
                    self._changed.notify_all()
        except BaseException as exc:  # reported by the reader: `read` and `verify` raise it
            self._error = exc
        finally:
            if hasattr(chunks, "close"):
                chunks.close()  # the GET's response goes back to the pool, also when stopped early
            with self._changed:
                self._done = True
                self._changed.notify_all()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        start = self._position
        end = self._size if size is None or size < 0 else min(start + size, self._size)
        if start >= self._tail_at:
            data = self._tail[start - self._tail_at : end - self._tail_at]
        else:
            self._wait(end)
            data = os.pread(self._fd, end - start, start)
        self._position = start + len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _wait(self, end: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._arrived >= end or self._done)
        if self._arrived < end:
            raise self._error or SourceChanged("the source file ended early while it was read", field="distributionId")

    def verify(self, sha256: str | None) -> None:
        """Once the download is done: its error if it failed, else the SHA-256 against the recorded one, and that
        the footer fetched ahead is the end of the bytes downloaded (the object did not change in between)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        _checked(self._digest.hexdigest(), sha256)
        if self._arrived != self._size or os.pread(self._fd, len(self._tail), self._tail_at) != self._tail:
            raise SourceChanged("the source file changed while it was read", field="distributionId")

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()


def _parquet_batch_rows(source: pq.ParquetFile, names: list[str]) -> int:
    """Rows per batch for about BATCH_BYTES of decoded data, measured on the first rows (the file's own sizes
    are of encoded data: dictionary-encoded text decodes many times larger)."""
    sample = next(source.iter_batches(batch_size=1024, columns=names), None)
    if sample is None or sample.num_rows == 0:
        return BATCH_ROWS
    size = sum(_decoded(column).nbytes for column in sample.columns)  # a sample's dictionary is its row group's
    return max(1024, min(BATCH_ROWS, BATCH_BYTES * sample.num_rows // max(size, 1)))


def _decoded(values: pa.Array) -> pa.Array:
    return pc.cast(values, values.type.value_type) if pa.types.is_dictionary(values.type) else values


def _cast(values: pa.Array, plan: ColumnPlan, dense: bool) -> pa.Array:
    """The column in its declared type; text read as a dictionary stays one unless `dense`."""
    if pa.types.is_dictionary(values.type) and values.type.value_type == plan.source_type and not dense:
        return values
    try:
        return pc.cast(values, plan.source_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        message = f"column {plan.name!r} holds {values.type}, which is not its declared {plan.source_type}"
        raise MalformedRow(message, field=plan.name) from None


def distribution_batches(
    store: ObjectStore, bucket: str, key: str, media_type: str, file_name: str, sha256: str | None,
    plans: list[ColumnPlan], bad: Quarantine,
) -> Iterator[pa.RecordBatch]:  # fmt: skip
    try:
        if media_type in PARQUET_TYPES or file_name.lower().endswith(".parquet"):
            chunks = store.get_stream(bucket, key, chunk_size=SPOOL_CHUNK)
            yield from parquet_batches(chunks, plans, sha256, footer=lambda: _parquet_footer(store, bucket, key))
        else:
            yield from csv_batches(store.get_stream(bucket, key), plans, sha256, bad)
    except NotFound:
        # Where it was stored is the custodian's business, not the recipient's: the log has it, the job does not.
        log.warning("export source %s/%s is missing", bucket, key)
        raise SourceMissing(f"the file {file_name} is no longer in object storage", field="distributionId") from None


def _parquet_footer(store: ObjectStore, bucket: str, key: str) -> tuple[int, bytes] | None:
    """The object's size and its last FOOTER_BYTES, when it is a Parquet file of at least READ_WHILE_DOWNLOADING
    bytes whose footer lies within them; else None, and the file is read once spooled, as it always was (so a
    failing range request is reported by the GET that follows, and a small or odd file is read as before)."""
    try:
        total, tail = store.tail(bucket, key, FOOTER_BYTES)
    except Exception:  # the GET that follows reports what is wrong
        return None
    if total < READ_WHILE_DOWNLOADING or len(tail) != FOOTER_BYTES:
        return None
    if tail[-4:] != b"PAR1" or int.from_bytes(tail[-8:-4], "little") + 8 > len(tail):
        return None
    return total, tail


def is_tabular(media_type: str, file_name: str) -> bool:
    return media_type in PARQUET_TYPES | {"text/csv"} or file_name.lower().endswith((".csv", ".parquet"))


async def catalogue_batches(
    session: AsyncSession, dataset_version_id, plans: list[ColumnPlan]
) -> AsyncIterator[pa.RecordBatch]:
    """The version's batches with their QC results, flattened, in partitions of BATCH_ROWS."""
    query = (
        select(*_CATALOGUE_SELECT)
        .select_from(dataset_version_batch)
        .join(Batch, Batch.id == dataset_version_batch.c.batch_id)
        .outerjoin(QcResult, QcResult.batch_id == Batch.id)
        .where(dataset_version_batch.c.dataset_version_id == dataset_version_id)
        .order_by(Batch.lot_number, QcResult.position)
    )
    names = [column["name"] for column in CATALOGUE_COLUMNS]
    wanted = [names.index(plan.name) for plan in plans]
    result = await session.stream(query.execution_options(yield_per=BATCH_ROWS))
    async for rows in result.partitions(BATCH_ROWS):
        columns = list(zip(*rows, strict=True))
        arrays = [pa.array(columns[i], plan.source_type) for i, plan in zip(wanted, plans, strict=True)]
        yield pa.RecordBatch.from_arrays(arrays, names=[plan.name for plan in plans])


def blocking(batches: AsyncIterator[pa.RecordBatch], loop: asyncio.AbstractEventLoop) -> Iterator[pa.RecordBatch]:
    """An async source read from the export's worker thread, each batch fetched on the event loop."""
    while True:
        try:
            yield asyncio.run_coroutine_threadsafe(anext(batches), loop).result()
        except StopAsyncIteration:
            return
