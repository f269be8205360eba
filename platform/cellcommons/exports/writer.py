"""Parquet out of a stream of record batches, read by the multipart upload as it is written.

The upload pulls: `put_object` reads a part (16 MiB) at a time from `ParquetStream`, which pulls batches from
the source through the policy and filter only until it holds that many bytes. One thread, no queue; memory
holds one row group being encoded plus one part, whatever the row count. An exception while pulling (a bad row,
a changed source, a stop request) propagates out of `read`, and the SDK aborts the multipart upload, so no
half-written object remains. Row groups gather batches up to ROW_GROUP_BYTES of Arrow data or ROW_GROUP_ROWS
rows (large enough for scans to skip and read efficiently, small enough for the memory bound); zstd.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 1_000_000
ROW_GROUP_BYTES = 16 * 1024 * 1024
PART_SIZE = 8 * 1024 * 1024  # multipart parts: the SDK holds a few copies of one; at most 10 000 parts (80 GB)
COMPRESSION = "zstd"
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


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
    def __init__(
        self,
        batches: Iterator[pa.RecordBatch],
        schema: pa.Schema,
        on_row_group: Callable[[int, int], None] = lambda rows, size: None,
    ):
        self._batches = batches
        self._sink = _Sink()
        self._writer = pq.ParquetWriter(self._sink, schema, compression=COMPRESSION)
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self._done = False
        self._on_row_group = on_row_group
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
            self._writer.close()
            self._done = True
            return
        if batch.num_rows:
            self._pending.append(batch)
            self._pending_bytes += batch.nbytes
        if self._pending_bytes >= ROW_GROUP_BYTES or sum(b.num_rows for b in self._pending) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending)
        self._pending, self._pending_bytes = [], 0
        self._writer.write_table(table, row_group_size=table.num_rows)
        self.rows += table.num_rows
        self._on_row_group(self.rows, self.size)


class ReadAhead(io.RawIOBase):
    """`source` read in `chunk`-sized pieces on a thread of its own, at most `depth` pieces ahead: producing
    the next part (reading the source, the policy, encoding) overlaps uploading this one. An exception on that
    thread comes out of `read`, so the upload aborts as before; `close` stops the thread."""

    def __init__(self, source: io.RawIOBase, chunk: int, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(depth)
        self._rest = b""
        self._eof = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(source, chunk), name="export-encode", daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        pieces, wanted = [], size
        while wanted != 0 and self._at_hand():
            take = len(self._rest) if wanted < 0 else min(wanted, len(self._rest))
            pieces.append(self._rest[:take])
            self._rest = self._rest[take:]
            wanted -= take if wanted > 0 else 0
        return b"".join(pieces)

    def _at_hand(self) -> bool:
        """Whether bytes are at hand, waiting for the next piece when need be."""
        if not self._rest and not self._eof:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            self._rest, self._eof = item, not item
        return bool(self._rest)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        super().close()

    def _fill(self, source: io.RawIOBase, chunk: int) -> None:
        try:
            while not self._stop.is_set():
                data = source.read(chunk)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the reader, which raises it
            self._put(exc)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue


def return_freed_memory() -> None:
    """For processes that run exports (the worker, `export run`, the benchmark): memory they free goes back to
    the system, so their resident size follows their live data rather than what they once held.

    Arrow's allocator becomes jemalloc with immediate decay (its default keeps freed pages for reuse). And glibc
    serves every allocation of 1 MiB or more (the parts handed between threads) by mmap: by default the threshold
    rises to the largest block freed, after which such blocks come from per-thread heaps that fragment and grow
    with the number of parts an export has uploaded."""
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except NotImplementedError:  # a pyarrow built without jemalloc keeps its default
        pass
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 1024 * 1024)
    except (OSError, AttributeError):  # not glibc
        pass


def with_terms(schema: pa.Schema, terms: dict[str, str]) -> pa.Schema:
    """The schema carrying the export's terms as Parquet key-value metadata."""
    return schema.with_metadata({key.encode(): value.encode() for key, value in terms.items()})
