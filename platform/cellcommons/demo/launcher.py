"""`cellcommons demo`: the embedded stack on one machine, kept under one folder between runs."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shlex
import shutil
import signal
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import uvicorn
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from cellcommons.api.app import create_app
from cellcommons.auth.dev_idp import DevIdentityProvider
from cellcommons.auth.dev_idp.users import DEMO_USERS
from cellcommons.catalogue.models import Dataset, Institution
from cellcommons.db import Database
from cellcommons.demo.activity import DemoFiles, submit_pending_requests
from cellcommons.demo.consortium import SCALES, Consortium
from cellcommons.demo.identity import register_dev_issuers
from cellcommons.demo.seed import seed_through_service
from cellcommons.demo.stack import EmbeddedPostgres, EmbeddedS3, S3Credentials, free_port, stop_leftover_servers
from cellcommons.errors import Conflict, InvalidInput, Unavailable
from cellcommons.exports.worker import background_worker
from cellcommons.migrations import migrate
from cellcommons.settings import Environment, Settings, SettingsError
from cellcommons.storage import ObjectStore
from cellcommons.sync.scheduler import background_scheduler

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


def run_demo(settings: Settings, data_dir: Path, reset: bool, port: int, console: Console) -> None:
    if settings.environment is Environment.production:
        raise SettingsError(["cellcommons demo refuses production settings (CELLCOMMONS_ENVIRONMENT=production)"])
    stop = _stop_on_signals()
    with ExitStack() as stack:
        _hold(data_dir, stack)  # first in, last out: released once every server has stopped
        stopped = stop_leftover_servers(data_dir / "postgres", data_dir / "s3")
        if stopped:
            message = f"stopped {' and '.join(stopped)} left running by an earlier demo on {data_dir}"
            console.print(message, highlight=False, soft_wrap=True)
        if reset:
            _clear(data_dir)
        with console.status("starting PostgreSQL and object storage…"):
            started = start_stack(settings, data_dir, stack)
        with console.status("migrating…"):
            migrate(started)
        ObjectStore.from_settings(started).client.list_buckets()
        idp = stack.enter_context(DevIdentityProvider(None, started))
        with console.status("registering the demo issuers and seeding the demo consortium…"):
            seeded = asyncio.run(_prepare(started, idp))
        api_url = _serve_api(started, port or free_port(), stack)
        stack.callback(background_worker(started).start().stop)  # runs queued exports; Ctrl-C releases its job
        stack.callback(background_scheduler(started).start().stop)  # sync sources; Ctrl-C interrupts a run
        state = DemoState(api_url=api_url, issuers={slug: idp.issuer(slug) for slug in idp.slugs})
        (data_dir / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
        stack.callback((data_dir / STATE_FILE).unlink, missing_ok=True)
        console.print(_summary(started, data_dir, state, seeded))
        console.print(_other_shell(settings, started), highlight=False, soft_wrap=True)
        console.print(READY_LINE + " Press Ctrl-C to stop.", highlight=False)
        stop.wait()
        console.print("stopping…")
    console.print("stopped.")


LOCK_FILE = ".lock"


def _hold(data_dir: Path, stack: ExitStack) -> None:
    """One demo per data folder: a second one (or its --reset) would take the running one's servers from under it.
    The lock goes with the process however it ends (the file holds its pid for the message)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = stack.enter_context(open(data_dir / LOCK_FILE, "a+"))
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        owner = lock.read().strip() or "unknown"
        message = f"a demo is already running with data folder {data_dir} (pid {owner})"
        raise Conflict(message, field="data_dir") from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    (data_dir / STATE_FILE).unlink(missing_ok=True)  # a killed run's: its API is gone


def _running(data_dir: Path) -> bool:
    """Whether a demo holds the folder's lock (a demo.json without one is a killed run's)."""
    try:
        with open(data_dir / LOCK_FILE) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def _clear(data_dir: Path) -> None:
    """--reset: everything under the folder but the lock this run holds."""
    for child in data_dir.iterdir():
        if child.name == LOCK_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _stop_on_signals() -> threading.Event:
    """Ctrl-C, SIGTERM and a closed terminal (SIGHUP) all stop the demo the same way: every server with it."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            _detach_output()
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    return stop


def _detach_output() -> None:
    """The terminal is gone: what is printed on the way out goes nowhere rather than failing the shutdown (EIO)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


STATE_FILE = "demo.json"


@dataclass(frozen=True)
class DemoState:
    """What a running demo tells other commands (`cellcommons demo-token`) about itself."""

    api_url: str
    issuers: dict[str, str]


def read_state(data_dir: Path) -> DemoState:
    not_running = InvalidInput(f"no demo is running with data folder {data_dir}", field="data_dir")
    if not _running(data_dir):
        raise not_running
    try:
        return DemoState(**json.loads((data_dir / STATE_FILE).read_text()))
    except FileNotFoundError:
        raise not_running from None  # still starting


async def _prepare(settings: Settings, idp: DevIdentityProvider) -> int:
    """Seed the demo scale on first run (with files and pending access requests); (re)register the dev issuers,
    whose ports change every run."""
    database = Database(settings)
    try:
        async with httpx.AsyncClient(timeout=10) as http, database.unit_of_work() as session:
            empty = not await session.scalar(select(func.count()).select_from(Institution))
            if empty:
                files = DemoFiles(ObjectStore.from_settings(settings), settings, http)
                consortium = Consortium(SCALES["demo"])
                await seed_through_service(session, consortium, origin=settings.node_id, files=files)
                await submit_pending_requests(session, settings.node_id)
            await register_dev_issuers(session, http, idp)
            return await session.scalar(select(func.count()).select_from(Dataset))
    finally:
        await database.dispose()


def _serve_api(settings: Settings, port: int, stack: ExitStack) -> str:
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    stack.callback(thread.join, 15)
    stack.callback(setattr, server, "should_exit", True)
    while not server.started:
        if not thread.is_alive():
            raise Unavailable(f"the API could not start on 127.0.0.1:{port} (is the port in use?)")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}"


def _summary(settings: Settings, data_dir: Path, state: DemoState, datasets: int) -> Table:
    table = Table(title="Cell Commons demo", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("portal (sign in, downloads)", f"{state.api_url}/")
    table.add_row("GraphQL API (GraphiQL)", f"{state.api_url}/graphql")
    table.add_row("catalogue", f"{datasets} datasets of the synthetic consortium")
    table.add_row("export worker", "running: requestExport jobs run here (cellcommons export status, see below)")
    table.add_row("sync scheduler", "running: due sources run here (cellcommons sync add-source, sync runs)")
    for slug, issuer in state.issuers.items():
        table.add_row(f"sign-in: {slug}", issuer)
    users = ", ".join(f"{u.username} ({'/'.join(r.value for r in u.roles) or 'no role'})" for u in DEMO_USERS)
    table.add_row("demo users (every issuer)", users)
    table.add_row("a demo token", f"cellcommons demo-token leiden-scgt stella --data-dir {data_dir}")
    table.add_row("data folder", str(data_dir))
    table.add_row("PostgreSQL (owner)", settings.owner_url.render_as_string(hide_password=True))
    table.add_row("object storage (S3)", f"http://{settings.s3_endpoint}  access key {settings.s3_access_key}")
    return table


# What another shell needs for the other commands to reach the servers the demo started (its other settings are
# that shell's own environment, as they were the demo's).
_SHELL_VARIABLES = {"database_url": "CELLCOMMONS_DATABASE_URL", "s3_endpoint": "CELLCOMMONS_S3_ENDPOINT"}


def _other_shell(configured: Settings, started: Settings) -> str:
    exports = [
        f"  export {variable}={shlex.quote(getattr(started, field))}"
        for field, variable in _SHELL_VARIABLES.items()
        if getattr(configured, field) != getattr(started, field)
    ]
    if not exports:
        return "The other commands (cellcommons export status, sync runs, …) use this demo's servers as they are."
    return "\n".join(["For the other commands (cellcommons export status, sync runs, …), in another shell:", *exports])
