"""PostgreSQL itself keeps the audit log append-only: privileges for the application role, triggers for all."""

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from cellcommons.audit.service import append
from cellcommons.db import Database, make_engine

REWRITES = [
    "UPDATE audit_event SET details = '{\"forged\": true}'",
    "DELETE FROM audit_event",
    "TRUNCATE audit_event",
]


@pytest.fixture
async def one_event(fresh_settings):
    database = Database(fresh_settings)
    async with database.unit_of_work() as session:
        await append(session, actor="user:alice@lumc", action="batch.create")
    await database.dispose()
    return fresh_settings


async def _refused(url, statement, match):
    engine = make_engine(url)
    try:
        with pytest.raises(DBAPIError, match=match):
            async with engine.begin() as conn:
                await conn.execute(text(statement))
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM audit_event"))).scalar() == 1
    finally:
        await engine.dispose()


@pytest.mark.parametrize("statement", REWRITES)
async def test_the_application_role_may_not_rewrite_the_log(one_event, statement):
    await _refused(one_event.app_url, statement, "permission denied for table audit_event")


@pytest.mark.parametrize("statement", REWRITES)
async def test_not_even_the_owner_may_rewrite_the_log(one_event, statement):
    verb = statement.split()[0]
    await _refused(one_event.owner_url, statement, f"audit_event is append-only: {verb} refused")


@pytest.mark.parametrize(
    "statement",
    ["INSERT INTO audit_chain_head VALUES (2, 0, 'x')", "DELETE FROM audit_chain_head", "TRUNCATE audit_chain_head"],
)
async def test_the_application_role_may_only_move_the_chain_head(session, statement):
    await session.execute(text("UPDATE audit_chain_head SET seq = seq"))  # what append needs
    with pytest.raises(DBAPIError, match="permission denied for table audit_chain_head"):
        async with session.begin_nested():
            await session.execute(text(statement))
