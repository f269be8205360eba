"""Servers of a test module's own (an embedded PostgreSQL and an S3 server on their own data folders), so a test
can stop and start them without touching the session's."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cellcommons.demo.stack import EmbeddedPostgres, EmbeddedS3, S3Credentials, create_database
from cellcommons.migrations import migrate
from cellcommons.settings import Environment, Settings


@dataclass
class Outage:
    workdir: Path
    postgres: EmbeddedPostgres
    s3: EmbeddedS3
    settings: Settings

    def stop_postgres(self) -> None:
        self.postgres.stop()

    def start_postgres(self) -> None:
        # Same data folder, same Unix socket: the app's URL is valid again.
        self.postgres = EmbeddedPostgres(self.workdir / "postgres")

    def stop_s3(self) -> None:
        self.s3.stop()

    def start_s3(self) -> None:
        self.s3 = EmbeddedS3(self.workdir / "s3", self.s3.credentials, port=self.s3.port)


@contextmanager
def own_servers(workdir: Path) -> Iterator[Outage]:
    """A migrated database and an S3 server (with credentials) that only this module uses."""
    postgres = EmbeddedPostgres(workdir / "postgres")
    s3 = EmbeddedS3(workdir / "s3", S3Credentials("cc-" + secrets.token_hex(6), secrets.token_urlsafe(24)))
    url = create_database(postgres.url, "faults")
    settings = Settings(
        _env_file=None,
        environment=Environment.test,
        database_url=url.render_as_string(hide_password=False),
        s3_endpoint=s3.endpoint,
        s3_access_key=s3.credentials.access_key,
        s3_secret_key=s3.credentials.secret_key,
    )
    state = Outage(workdir, postgres, s3, settings)
    try:
        migrate(settings)
        yield state
    finally:
        state.s3.stop()
        state.postgres.stop()
