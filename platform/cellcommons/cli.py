"""The `cellcommons` command. Thin: parse, call a service, render."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cellcommons.errors import CellCommonsError
from cellcommons.settings import SettingsError, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Cell Commons data-sharing platform.")
console = Console()
errors = Console(stderr=True, soft_wrap=True)


def _reported(command):
    """One clear line per problem and a non-zero exit instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SettingsError as exc:
            for problem in exc.problems:
                errors.print(f"error: {problem}", highlight=False)
            raise typer.Exit(2) from None
        except CellCommonsError as exc:
            errors.print(f"error: {exc.message}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper


@app.command("migrate")
@_reported
def migrate_command(
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
) -> None:
    """Bring the database schema up to date (idempotent; runs as the owner role)."""
    from cellcommons.migrations import describe, migrate

    settings = load_settings()
    migrate(settings, revision)
    console.print(f"database {describe(settings.owner_url)} is at revision {revision}", highlight=False)


@app.command("demo")
@_reported
def demo_command(
    data_dir: Annotated[
        Path | None, typer.Option(help="folder for the demo's data (default: CELLCOMMONS_DATA_DIR/demo)")
    ] = None,
    reset: Annotated[bool, typer.Option(help="delete the demo's data and start over")] = False,
) -> None:
    """Run the platform on the embedded default stack until Ctrl-C."""
    from cellcommons.demo.launcher import run_demo

    settings = load_settings()
    run_demo(settings, (data_dir or settings.data_dir / "demo").resolve(), reset, console)


audit_app = typer.Typer(no_args_is_help=True, help="The append-only, hash-chained audit log.")
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
@_reported
def audit_verify_command(
    checkpoint: Annotated[
        bool, typer.Option(help="when intact, store {count, head hash, time} in the object store's audit bucket")
    ] = False,
) -> None:
    """Recompute the whole hash chain; exit 1 naming the first broken event."""
    import asyncio

    from cellcommons.audit.verify import verify_database, write_checkpoint
    from cellcommons.storage import ObjectStore

    settings = load_settings()
    verified = asyncio.run(verify_database(settings))
    line = verified.summary()
    if verified.intact and checkpoint:
        bucket = settings.bucket("audit")
        line += f"; checkpoint {bucket}/{write_checkpoint(ObjectStore.from_settings(settings), bucket, verified)}"
    console.print(line, highlight=False, soft_wrap=True)
    if not verified.intact:
        raise typer.Exit(1)


@app.command("seed")
@_reported
def seed_command(
    scale: Annotated[
        str, typer.Option(help="tiny (tests), demo (tens of datasets) or bench (100 000 batches)")
    ] = "demo",
    seed: Annotated[int, typer.Option(help="random seed; the same seed gives the same consortium")] = 2026,
) -> None:
    """Load the synthetic consortium into the catalogue, with a progress bar."""
    import asyncio

    from cellcommons.demo.seed import run_seed

    counts = asyncio.run(run_seed(load_settings(), scale, seed, console))
    console.print(", ".join(f"{n:,} {table}" for table, n in counts.items()), highlight=False)
