"""One PostgreSQL server and one S3 server per test session.

CELLCOMMONS_TEST_DATABASE_URL points at a server to use (CI: the machine's PostgreSQL); without it an embedded
PostgreSQL starts. CELLCOMMONS_TEST_S3_ENDPOINT (+ _ACCESS_KEY / _SECRET_KEY) points at an S3 server; without
it SeaweedFS starts with fresh credentials. Service tests run in a transaction that is rolled back; tests that
need committed data take `fresh_settings`, a database of their own cloned from the migrated template.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from cellcommons.auth.dev_idp import DevIdentityProvider
from cellcommons.db import make_engine
from cellcommons.demo.scratch import ScratchStack
from cellcommons.demo.stack import S3Credentials, unique_name
from cellcommons.settings import Environment, Settings
from cellcommons.storage import ObjectStore


def _s3_from_environment() -> tuple[str | None, S3Credentials | None]:
    endpoint = os.environ.get("CELLCOMMONS_TEST_S3_ENDPOINT")
    if not endpoint:
        return None, None
    return endpoint, S3Credentials(
        os.environ["CELLCOMMONS_TEST_S3_ACCESS_KEY"], os.environ["CELLCOMMONS_TEST_S3_SECRET_KEY"]
    )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScratchStack]:
    endpoint, credentials = _s3_from_environment()
    with ScratchStack(
        tmp_path_factory.mktemp("stack"),
        database_url=os.environ.get("CELLCOMMONS_TEST_DATABASE_URL"),
        s3_endpoint=endpoint,
        s3_credentials=credentials,
    ) as scratch:
        yield scratch


@pytest.fixture(scope="session")
def settings(stack: ScratchStack) -> Settings:
    """The session's shared database (a clone of the template); tests on it roll back."""
    return stack.new_database()


@pytest.fixture
def fresh_settings(stack: ScratchStack) -> Iterator[Settings]:
    """A database of this test's own, for committed data seen by other connections or processes."""
    settings = stack.new_database()
    yield settings
    stack.drop(settings)


@pytest.fixture(scope="session")
async def app_engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings.app_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def session(app_engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """An application-role session whose work is rolled back after the test, commits included."""
    async with app_engine.connect() as connection:
        transaction = await connection.begin()
        session = AsyncSession(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
        try:
            yield session
        finally:
            await session.close()
            await transaction.rollback()


@pytest.fixture(scope="session")
def object_store(settings: Settings) -> ObjectStore:
    return ObjectStore.from_settings(settings)


@pytest.fixture
def bucket(object_store: ObjectStore) -> Iterator[str]:
    """A bucket of this test's own, emptied and removed afterwards."""
    name = unique_name("cc-test").replace("_", "-")
    object_store.ensure_bucket(name)
    yield name
    client = object_store.client
    for item in client.list_objects(name, recursive=True):
        client.remove_object(name, item.object_name)
    client.remove_bucket(name)


@pytest.fixture(scope="session")
def dev_idp() -> Iterator[DevIdentityProvider]:
    """One loopback server, issuers at `dev_idp.issuer(slug)` for every slug of demo.consortium.INSTITUTIONS."""
    with DevIdentityProvider(None, Settings(_env_file=None, environment=Environment.test)) as idp:
        yield idp


@pytest.fixture
def clean_dev_idp(dev_idp: DevIdentityProvider) -> Iterator[DevIdentityProvider]:
    """The session's provider, reset before and after: for tests that rotate keys, take JWKS down or count."""
    dev_idp.reset()
    yield dev_idp
    dev_idp.reset()
