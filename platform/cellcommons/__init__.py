"""Cell Commons: the consortium's catalogue of clinical cell-therapy material and MSC datasets."""

import os

__version__ = "0.1.0"

# Arrow fixes its native allocator when pyarrow is first imported. jemalloc (pyarrow's wheels bring it) hands freed
# memory back to the system (see exports/writer.return_freed_memory); the wheels' default, mimalloc, keeps what
# the Parquet reader and writer once held, 50-60 MiB more peak RSS for an export. The environment may choose.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
