"""settle_heap in a process of its own: the heap frozen once, young collections later, a second call a no-op."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
from cellcommons.background import settle_heap
before = gc.get_threshold()
settle_heap()
frozen = gc.get_freeze_count()
kept = [object() for _ in range(1000)]  # made after settling: not frozen by a second call
settle_heap()
print(before[0], gc.get_threshold()[0], frozen > 0, gc.get_freeze_count() == frozen)
"""


def test_the_heap_is_settled_once_per_process():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["700", "10000", "True", "True"]
