"""Parquet out of a stream of record batches, read by the multipart upload as it is written.

The upload pulls: `put_object` reads a part (PART_SIZE) at a time from `ParquetStream`, which pulls batches
until it holds that many bytes, and hands each part to the SDK's upload threads (a few parts in flight). The
batches come through `Ahead`: reading and decoding the source and applying the policy run on a thread of their
own, up to a row group's worth of batches ahead, so they overlap the encoding, the hashing and the upload. Memory
holds those batches, one row group being encoded and a few parts, whatever the row count. An exception on either side
(a bad row, a changed source, a stop request) propagates out of `read`, and the SDK aborts the multipart upload,
so no half-written object remains. Row groups gather batches up to ROW_GROUP_BYTES of Arrow data held or
ROW_GROUP_ROWS rows: about 350 000 clinical rows (DuckDB writes 122 880), large enough for scans to skip and
read efficiently, small enough for the memory bound; zstd at Arrow's default level (1), as `write_table`.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import io
import itertools
import threading
from collections import deque
from collections.abc import Collection, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cellcommons.exports.arrays import same_values

ROW_GROUP_ROWS = 1_000_000
# Each row group repeats its columns' dictionaries: with 50 000 donors' pseudonyms in a source row group, row groups
# of 8 MiB held made a file a third larger than 16 MiB ones (5 M rows: 105 → 80 MB), with more to encode, hash and
# upload. Held bytes count dictionary-encoded columns as their indices, so 16 MiB is some 350 000 clinical rows.
ROW_GROUP_BYTES = 16 * 1024 * 1024
# Policy-applied batches waiting for the encoder, by held bytes (`held_bytes`): a row group's worth, so the policy
# prepares the next row group while the encoder works on this one. Counted in batches instead, the policy stood
# idle whenever a row group took more batches than the count (text read as dictionaries holds less per batch).
AHEAD_BYTES = ROW_GROUP_BYTES
WRITE_BUFFER = 1024 * 1024
# A column's dictionary may grow to 2 MiB per row group (Arrow's default is 1 MiB) before the column falls back to
# plain values: a row group's tens of thousands of distinct 32-character pseudonyms (of a CSV source, hashed by
# the writer) then stay in the dictionary, a file about a fifth smaller (less to hash and upload).
DICTIONARY_PAGE_BYTES = 2 * 1024 * 1024
# Values the Parquet writer takes at a time (Arrow's default is 1 024). For a dictionary-encoded column with
# statistics, it finds the entries each such batch uses (hashing its indices) and their min/max: a fifth of the
# encoding at 1 024 for lot numbers (5 000 per row group), a tenth of that at 65 536. Arrow checks the page size
# (1 MiB) and the dictionary's after each such batch, and no batch is larger than an input batch (about 2 MiB of
# decoded rows, sources.BATCH_BYTES): pages and dictionaries overshoot by that at most (20 000 rows a page at most).
WRITE_BATCH_ROWS = 65_536
JUDGED_ROWS = 16_384  # the rows whose values decide which columns to dictionary-encode (`dictionary_columns`)
PART_SIZE = 5 * 1024 * 1024  # multipart parts (the S3 minimum): the SDK holds several; at most 10 000 parts (52 GB)
COMPRESSION = "zstd"
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
DECAY_MS = 100  # how long jemalloc keeps freed pages for reuse before returning them


class _Sink:
    """Where the Parquet writer puts its bytes: a queue of pieces for `read`, hashed and counted on the way.
    Pieces rather than one growing buffer, so handing out a part costs one copy and no reallocation."""

    def __init__(self):
        self.pieces: deque[bytes] = deque()
        self.queued = 0
        self.digest = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data) -> int:
        piece = bytes(data)
        self.pieces.append(piece)
        self.queued += len(piece)
        self.digest.update(piece)
        self.size += len(piece)
        return len(piece)

    def take(self, size: int) -> bytes:
        """Up to `size` bytes from the front of the queue, as one bytes object."""
        taken, wanted = [], min(size, self.queued)
        while wanted:
            piece = self.pieces.popleft()
            if len(piece) > wanted:
                self.pieces.appendleft(piece[wanted:])
                piece = piece[:wanted]
            taken.append(piece)
            wanted -= len(piece)
        chunk = b"".join(taken)
        self.queued -= len(chunk)
        return chunk

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class ParquetStream(io.RawIOBase):
    """The Parquet file of `batches`, read as it is written. Columns in `without_statistics` carry no min/max:
    for pseudonyms (uniformly random) they would cover nearly the whole range in every row group, so they let a
    reader skip nothing, and computing them over every value is a few percent of the encoding.

    `schema` is the file's as readers see it (with the terms). A column of it may arrive dictionary-encoded
    (pseudonyms of a Parquet source): such a column is written as its dictionary and indices, which the Parquet
    writer stores as they are when a row group's batches share one dictionary (those of one source row group do;
    a row group spanning several gets their union). The Arrow schema stored in the file is still `schema`, so
    readers get the values' type, not a dictionary."""

    def __init__(self, batches: Iterator[pa.RecordBatch], schema: pa.Schema, without_statistics: Collection[str] = ()):
        self._batches = batches
        self._sink = _Sink()
        # The writer's many small writes (page headers, pages) gathered in Arrow: the sink, Python, is called per
        # WRITE_BUFFER, so the encoding thread seldom waits for the GIL.
        self._out = pa.BufferedOutputStream(pa.PythonFile(self._sink, mode="w"), buffer_size=WRITE_BUFFER)
        self._schema = schema
        self._statistics = [name for name in schema.names if name not in without_statistics]
        self._writer: pq.ParquetWriter | None = None  # opened with the first row group, see dictionary_columns
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self._done = False
        self.rows = 0

    @property
    def sha256(self) -> str:
        return self._sink.digest.hexdigest()

    @property
    def size(self) -> int:
        return self._sink.size

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or self._sink.queued < size):
            self._advance()
        return self._sink.take(self._sink.queued if size < 0 else size)

    def readinto(self, buffer) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def _advance(self) -> None:
        batch = next(self._batches, None)
        if batch is None:
            self._flush()
            writer = self._writer_for(None)
            writer.add_key_value_metadata(file_metadata(self._schema))
            writer.close()
            self._out.close()  # the footer, still in the buffer, goes to the sink
            self._done = True
            return
        if not batch.num_rows:
            return
        self._pending_bytes += held_bytes(batch, self._pending[-1] if self._pending else None)
        self._pending.append(batch)
        if self._pending_bytes >= ROW_GROUP_BYTES or sum(b.num_rows for b in self._pending) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = _dictionaries_for_writing(pa.Table.from_batches(self._pending))
        self._pending, self._pending_bytes = [], 0
        self._writer_for(table).write_table(table, row_group_size=table.num_rows)
        self.rows += table.num_rows

    def _writer_for(self, first: pa.Table | None) -> pq.ParquetWriter:
        """Opened with the first row group, whose columns' types (dictionary-encoded or not) the writer takes;
        the schema readers see is stored at the end (`file_metadata`)."""
        if self._writer is None:
            encoded = True if first is None else dictionary_columns(first)
            self._writer = pq.ParquetWriter(
                self._out, (self._schema if first is None else first.schema).remove_metadata(), store_schema=False,
                compression=COMPRESSION, use_dictionary=encoded, dictionary_pagesize_limit=DICTIONARY_PAGE_BYTES,
                write_batch_size=WRITE_BATCH_ROWS,
                write_statistics=self._statistics or False,
            )  # fmt: skip
        return self._writer


def file_metadata(schema: pa.Schema) -> dict[str, str]:
    """The key-value metadata of a file whose readers see `schema`: its own metadata (the terms) and, as Arrow's
    writer stores it, the Arrow schema (IPC-serialised, base64) that gives readers the types and time zones."""
    serialised = base64.b64encode(schema.serialize().to_pybytes()).decode()
    return {**{k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}, "ARROW:schema": serialised}


def held_bytes(batch: pa.RecordBatch, previous: pa.RecordBatch | None) -> int:
    """The memory a pending batch holds: a dictionary it shares with the `previous` one counts once."""
    total = 0
    for index, column in enumerate(batch.columns):
        if not pa.types.is_dictionary(column.type):
            total += column.nbytes
            continue
        total += column.indices.nbytes
        if previous is None or not same_values(previous.column(index).dictionary, column.dictionary):
            total += column.dictionary.nbytes
    return total


def _dictionaries_for_writing(table: pa.Table) -> pa.Table:
    """The row group with each dictionary-encoded column on one dictionary of just the values its rows use.

    One dictionary, because the Parquet writer stores a column chunk's dictionary once (at a changed dictionary it
    falls back to plain values, the largest file): a column whose batches bring several gets their union (the
    others are left as they are: unifying costs a hash of every entry). Just the values used, because a source row
    group's dictionary names every donor of that row group: rows a filter dropped, or that another row group
    holds, must not leave their pseudonyms in this one."""
    for index, column in enumerate(table.columns):
        if not pa.types.is_dictionary(column.type) or not column.num_chunks:
            continue
        if not all(same_values(a.dictionary, b.dictionary) for a, b in itertools.pairwise(column.chunks)):
            column = column.unify_dictionaries()
        table = table.set_column(index, table.field(index), _used_values_only(column))
    return table


def _used_values_only(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The column (its chunks on one dictionary) on a dictionary of the entries its indices use. The entries used
    are marked, not found by hashing the row group's indices (with every text column a dictionary, hashing took
    some 0.5 s of an export's encoding at 5 M rows). The chunks keep their lengths: should the dictionary outgrow
    DICTIONARY_PAGE_BYTES, the writer falls back to plain values chunk by chunk, decoding a batch at a time rather
    than the row group at once."""
    dictionary = column.chunk(0).dictionary
    indices = pa.concat_arrays([chunk.indices for chunk in column.chunks])
    uses = np.zeros(len(dictionary), bool)
    uses[pc.drop_null(indices).to_numpy()] = True
    used = np.flatnonzero(uses)
    if len(used) == len(dictionary):
        return column
    renumbered = np.zeros(len(dictionary), column.type.index_type.to_pandas_dtype())  # the writer fixed the type
    renumbered[used] = np.arange(len(used))
    cut = pa.DictionaryArray.from_arrays(pa.array(renumbered).take(indices), dictionary.take(used), safe=False)
    starts = itertools.accumulate((len(chunk) for chunk in column.chunks), initial=0)
    pieces = zip(starts, column.chunks, strict=False)  # one start more than chunks: where the last one ends
    return pa.chunked_array([cut.slice(start, len(chunk)) for start, chunk in pieces])


def dictionary_columns(first: pa.Table) -> list[str]:
    """The columns to dictionary-encode, judged on the first JUDGED_ROWS rows: all but numbers and times whose
    values hardly repeat there (counts, measurements, instants). Their dictionary would cost hashing every value for
    a larger file than plain encoding; text keeps Parquet's own fallback (to plain once its dictionary is large).
    Not the whole row group: counting its distinct values took 63 MiB for 400 000 counts, the export's peak."""
    judged = first.slice(0, JUDGED_ROWS)
    return [
        name
        for name, values in zip(judged.column_names, judged.columns, strict=True)
        if not (_numeric(values.type) and pc.count_distinct(values).as_py() > len(values) // 2)
    ]


def _numeric(kind: pa.DataType) -> bool:
    return (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_temporal(kind)
    )


class Ahead:
    """Record batches from an iterator run on a thread of its own, up to `limit` bytes (`held_bytes`) ahead of
    their reader, so producing the next batches overlaps using this one (pyarrow, hashlib and the minio SDK release
    the GIL). One batch is always let through, whatever its size. An exception on that thread comes out of `next`
    in the reader; `close` stops the thread (it may be waiting for room to hand a batch over)."""

    def __init__(self, batches: Iterator[pa.RecordBatch], limit: int, name: str):
        self._limit = limit
        self._waiting: deque[tuple[object, int]] = deque()  # batches (or the end, or an exception) and their bytes
        self._held = 0
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._fill, args=(batches,), name=name, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while (item := self._take()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join()

    def __enter__(self) -> Ahead:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _take(self) -> object:
        with self._changed:
            self._changed.wait_for(lambda: self._waiting)
            item, size = self._waiting.popleft()
            self._held -= size
            self._changed.notify_all()
        return item

    def _fill(self, batches: Iterator[pa.RecordBatch]) -> None:
        previous = None
        try:
            for batch in batches:
                if not self._put(batch, held_bytes(batch, previous)):
                    return
                previous = batch
            self._put(_END, 0)
        except BaseException as exc:  # handed to the reader, which raises it
            self._put(exc, 0)

    def _put(self, item: object, size: int) -> bool:
        with self._changed:
            self._changed.wait_for(lambda: self._stopping or not self._waiting or self._held + size <= self._limit)
            if self._stopping:
                return False
            self._waiting.append((item, size))
            self._held += size
            self._changed.notify_all()
        return True


_END = object()


def return_freed_memory() -> None:
    """For processes that run exports (the worker, `export run`, the benchmark): memory they free goes back to
    the system, so their resident size follows their live data rather than what they once held.

    Arrow's allocator is jemalloc (the package sets ARROW_DEFAULT_MEMORY_POOL before pyarrow loads, so the Parquet
    reader and writer, which allocate from Arrow's native default, use it too), here returning freed pages after
    DECAY_MS rather than jemalloc's default of seconds. Not at once: every batch, page and row group takes fresh
    memory, and pages handed back at once must be faulted in again (three quarters of a million faults, a fifth
    of an export's CPU time, at 5 M rows); within DECAY_MS they are reused, for some 25 MiB more resident. And glibc
    serves every allocation of 1 MiB or more (the parts handed between threads) by mmap: by default the threshold
    rises to the largest block freed, after which such blocks come from per-thread heaps that fragment and grow
    with the number of parts an export has uploaded."""
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(DECAY_MS)
    except NotImplementedError:  # a pyarrow built without jemalloc keeps its default
        pass
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 1024 * 1024)
    except (OSError, AttributeError):  # not glibc
        pass


def with_terms(schema: pa.Schema, terms: dict[str, str]) -> pa.Schema:
    """The schema carrying the export's terms as Parquet key-value metadata."""
    return schema.with_metadata({key.encode(): value.encode() for key, value in terms.items()})
