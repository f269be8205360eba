"""Throw-away databases and an S3 server for the test session and the benchmarks.

One PostgreSQL server and one S3 server per session: the configured ones when given, else embedded ones.
A template database is migrated once; every database handed out is a `CREATE DATABASE … TEMPLATE` clone.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from cellcommons.demo.stack import (
    EmbeddedPostgres,
    EmbeddedS3,
    S3Credentials,
    create_database,
    drop_database,
    unique_name,
)
from cellcommons.migrations import migrate
from cellcommons.settings import Environment, Settings


class ScratchStack:
    def __init__(
        self,
        workdir: Path,
        database_url: str | None = None,
        s3_endpoint: str | None = None,
        s3_credentials: S3Credentials | None = None,
    ):
        self.workdir = workdir
        self._database_url = database_url
        self._s3_endpoint = s3_endpoint
        self.s3_credentials = s3_credentials or S3Credentials(
            access_key="cc-" + secrets.token_hex(6), secret_key=secrets.token_urlsafe(24)
        )
        self._stops: list = []
        self._databases: list[str] = []
        self.s3_server: EmbeddedS3 | None = None  # None when the S3 server is a configured one

    def __enter__(self) -> ScratchStack:
        try:
            self.admin_url = self._start_postgres()
            self.s3_endpoint = self._start_s3()
            self.template = unique_name("cc_template")
            self._create(self.template)
            migrate(self.settings_for(self.template))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for name in reversed(self._databases):
            drop_database(self.admin_url, name)
        for stop in reversed(self._stops):
            stop()

    def _start_postgres(self) -> URL:
        if self._database_url:
            return make_url(self._database_url).set(drivername="postgresql+psycopg")
        server = EmbeddedPostgres(self.workdir / "postgres")
        self._stops.append(server.stop)
        return server.url

    def _start_s3(self) -> str:
        if self._s3_endpoint:
            return self._s3_endpoint
        self.s3_server = EmbeddedS3(self.workdir / "s3", self.s3_credentials)
        self._stops.append(self.s3_server.stop)
        return self.s3_server.endpoint

    def _create(self, name: str, template: str | None = None) -> None:
        create_database(self.admin_url, name, template)
        self._databases.append(name)

    def settings_for(self, database: str, **overrides: object) -> Settings:
        return Settings(
            _env_file=None,
            environment=Environment.test,
            database_url=self.admin_url.set(database=database).render_as_string(hide_password=False),
            s3_endpoint=self.s3_endpoint,
            s3_access_key=self.s3_credentials.access_key,
            s3_secret_key=self.s3_credentials.secret_key,
            s3_region=self.s3_credentials.region,
            bucket_prefix=unique_name("cc").replace("_", "-"),
            **overrides,
        )

    def new_database(self, **overrides: object) -> Settings:
        """A fresh, migrated database of its own (committed data, other processes)."""
        name = unique_name("cc_db")
        self._create(name, template=self.template)
        return self.settings_for(name, **overrides)

    def drop(self, settings: Settings) -> None:
        name = settings.owner_url.database
        drop_database(self.admin_url, name)
        self._databases.remove(name)
