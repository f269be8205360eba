"""What a benchmark reports: figures next to a baseline measured in the same run, and their ratio."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table


@dataclass
class Measure:
    """A rate (higher is better) and the same work done by the baseline."""

    name: str
    value: float
    baseline: float
    unit: str
    baseline_name: str
    target: float | None = None  # minimum acceptable ratio, where the issue sets one

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")

    @property
    def meets_target(self) -> bool | None:
        return None if self.target is None else self.ratio >= self.target


@dataclass
class Report:
    benchmark: str
    measures: list[Measure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def print(self, console: Console) -> None:
        table = Table(title=f"bench {self.benchmark}")
        for column in ("measure", "value", "baseline", "ratio", "target"):
            table.add_column(column, justify="left" if column == "measure" else "right")
        for m in self.measures:
            verdict = "" if m.target is None else f"≥ {m.target:g} {'ok' if m.meets_target else 'MISSED'}"
            table.add_row(
                m.name,
                f"{m.value:,.1f} {m.unit}",
                f"{m.baseline:,.1f} {m.unit} ({m.baseline_name})",
                f"{m.ratio:.2f}×",
                verdict,
            )
        console.print(table)
        for note in self.notes:
            console.print(f"- {note}", highlight=False)

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "benchmark": self.benchmark,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "measures": [asdict(m) | {"ratio": m.ratio, "meets_target": m.meets_target} for m in self.measures],
            "notes": self.notes,
        }
        path.write_text(json.dumps(body, indent=2) + "\n")


def rate(work: Callable[[], int], repeat: int = 3) -> float:
    """Best of `repeat` runs of `work` (which returns how many units it did), in units per second."""
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        units = work()
        best = max(best, units / (time.perf_counter() - start))
    return best
