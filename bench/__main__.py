"""`python -m bench <name> [--quick] [--json PATH]`.

Uses CELLCOMMONS_BENCH_DATABASE_URL / CELLCOMMONS_BENCH_S3_ENDPOINT (+ _ACCESS_KEY, _SECRET_KEY) when set,
else starts the embedded PostgreSQL and S3 server; every run gets a fresh migrated database.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from cellcommons.demo.scratch import ScratchStack
from cellcommons.demo.stack import S3Credentials

HERE = Path(__file__).parent
NOT_BENCHMARKS = {"report"}


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name not in NOT_BENCHMARKS)


def _stack(workdir: Path) -> ScratchStack:
    endpoint = os.environ.get("CELLCOMMONS_BENCH_S3_ENDPOINT")
    credentials = None
    if endpoint:
        credentials = S3Credentials(
            os.environ["CELLCOMMONS_BENCH_S3_ACCESS_KEY"], os.environ["CELLCOMMONS_BENCH_S3_SECRET_KEY"]
        )
    return ScratchStack(
        workdir,
        database_url=os.environ.get("CELLCOMMONS_BENCH_DATABASE_URL"),
        s3_endpoint=endpoint,
        s3_credentials=credentials,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=available())
    parser.add_argument("--quick", action="store_true", help="a small run that checks the benchmark works")
    parser.add_argument("--json", type=Path, help="where to write the figures (default bench/results/NAME.json)")
    args = parser.parse_args(argv)
    module = importlib.import_module(f"bench.{args.name}")
    console = Console()
    with tempfile.TemporaryDirectory(prefix="cc-bench-") as workdir, _stack(Path(workdir)) as stack:
        report = module.run(stack, quick=args.quick, console=console)
    report.print(console)
    out = args.json or HERE / "results" / f"{args.name}.json"
    report.write_json(out)
    console.print(f"figures written to {out}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
