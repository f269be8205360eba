"""`cellcommons demo`: the embedded stack on one machine, kept under one folder between runs."""

from __future__ import annotations

import shutil
import signal
import threading
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cellcommons.demo.stack import EmbeddedPostgres, EmbeddedS3, S3Credentials
from cellcommons.migrations import migrate
from cellcommons.settings import Environment, Settings, SettingsError
from cellcommons.storage import ObjectStore

READY_LINE = "Cell Commons demo is ready."


def start_stack(settings: Settings, data_dir: Path, stack: ExitStack) -> Settings:
    """Start what the settings do not point at; return settings that point at everything."""
    updates: dict[str, object] = {}
    if not settings.database_url:
        postgres = EmbeddedPostgres(data_dir / "postgres")
        stack.callback(postgres.stop)
        updates["database_url"] = postgres.url.render_as_string(hide_password=False)
    if not settings.s3_endpoint:
        credentials = S3Credentials(settings.s3_access_key, settings.s3_secret_key.get_secret_value())
        s3 = EmbeddedS3(data_dir / "s3", credentials)
        stack.callback(s3.stop)
        updates["s3_endpoint"] = s3.endpoint
    return settings.model_copy(update=updates)


def run_demo(settings: Settings, data_dir: Path, reset: bool, console: Console) -> None:
    if settings.environment is Environment.production:
        raise SettingsError(["cellcommons demo refuses production settings (CELLCOMMONS_ENVIRONMENT=production)"])
    if reset and data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with ExitStack() as stack:
        with console.status("starting PostgreSQL and object storage…"):
            settings = start_stack(settings, data_dir, stack)
        with console.status("migrating…"):
            migrate(settings)
        ObjectStore.from_settings(settings).client.list_buckets()
        console.print(_summary(settings, data_dir))
        console.print(READY_LINE + " Press Ctrl-C to stop.", highlight=False)
        stop.wait()
        console.print("stopping…")
    console.print("stopped.")


def _summary(settings: Settings, data_dir: Path) -> Table:
    table = Table(title="Cell Commons demo", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("data folder", str(data_dir))
    table.add_row("PostgreSQL (owner)", settings.owner_url.render_as_string(hide_password=True))
    table.add_row("PostgreSQL (application)", settings.app_url.render_as_string(hide_password=True))
    table.add_row("object storage (S3)", f"http://{settings.s3_endpoint}  access key {settings.s3_access_key}")
    return table
