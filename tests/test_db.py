import pytest
from sqlalchemy import bindparam, literal, select, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.exc import DBAPIError, ProgrammingError
from tests.storage.files import institution as institution_named

from cellcommons.audit.models import Outcome
from cellcommons.catalogue.models import Institution
from cellcommons.db import Database, DriverStatement, end_request, make_engine


async def _owner_creates_table(settings, name):
    owner = make_engine(settings.owner_url)
    async with owner.begin() as conn:
        await conn.execute(text(f"CREATE TABLE {name} (id int PRIMARY KEY, label text NOT NULL)"))
    await owner.dispose()


async def test_a_unit_of_work_commits_when_the_block_succeeds_and_rolls_back_when_it_raises(fresh_settings):
    await _owner_creates_table(fresh_settings, "thing")
    database = Database(fresh_settings)
    try:
        async with database.unit_of_work() as session:
            await session.execute(text("INSERT INTO thing VALUES (1, 'kept')"))
        with pytest.raises(RuntimeError):
            async with database.unit_of_work() as session:
                await session.execute(text("INSERT INTO thing VALUES (2, 'half-written')"))
                await session.flush()
                raise RuntimeError("the request failed after writing")
        async with database.unit_of_work() as session:
            labels = (await session.execute(text("SELECT label FROM thing ORDER BY id"))).scalars().all()
        assert labels == ["kept"]
    finally:
        await database.dispose()


async def test_the_application_role_gets_rows_of_new_tables_but_cannot_change_the_schema(fresh_settings):
    await _owner_creates_table(fresh_settings, "granted")
    database = Database(fresh_settings)
    try:
        async with database.unit_of_work() as session:
            assert (await session.execute(text("SELECT current_user"))).scalar() == "cellcommons_app"
            await session.execute(text("INSERT INTO granted VALUES (1, 'x')"))
            await session.execute(text("UPDATE granted SET label = 'y'"))
        for ddl in [
            "CREATE TABLE intruder (id int)",
            "ALTER TABLE granted ADD COLUMN extra text",
            "DROP TABLE granted",
        ]:
            with pytest.raises(ProgrammingError, match=r"permission denied|must be owner"):
                async with database.unit_of_work() as session:
                    await session.execute(text(ddl))
    finally:
        await database.dispose()


async def test_service_sessions_are_rolled_back_after_each_test(session):
    # The shared session database has no tables of its own yet; the application role still connects to it.
    assert (await session.execute(text("SELECT current_user"))).scalar() == "cellcommons_app"


async def test_a_driver_statement_runs_in_the_sessions_transaction_after_its_pending_changes(session):
    institution = await institution_named(session, "leiden-scgt")
    institution.name = "Renamed, not flushed"  # the statement must see it, as a query through the session would
    statement = DriverStatement(
        select(Institution.name, literal(Outcome.denied).label("constant")).where(
            Institution.slug == bindparam("slug"), Institution.id == bindparam("id", type_=UUID)
        )
    )
    rows = await statement.rows(session, slug="leiden-scgt", id=institution.id)
    assert rows == [("Renamed, not flushed", "denied")]  # the enum constant converted as SQLAlchemy binds it
    with pytest.raises(DBAPIError, match="division by zero"):  # errors as SQLAlchemy's, like any statement's
        async with session.begin_nested():
            await DriverStatement(text("SELECT 1 / :zero")).rows(session, zero=0)
    assert await statement.rows(session, slug="leiden-scgt", id=institution.id) == rows  # the transaction goes on


async def _prepared_statements(session) -> int:
    return await session.scalar(text("SELECT count(*) FROM pg_prepared_statements"))


async def test_a_request_that_only_read_ends_in_a_commit_and_keeps_its_prepared_statements(fresh_settings):
    """psycopg prepares a statement run five times on a connection, and forgets them all on a rollback."""
    database = Database(fresh_settings)
    try:
        for _ in range(6):
            session = database.sessions()
            assert await session.scalar(select(Institution.slug).where(Institution.slug == "none")) is None
            await end_request(session)
        session = database.sessions()
        assert await _prepared_statements(session) == 1
        await session.close()  # an ordinary rollback: psycopg deallocates what it prepared
        session = database.sessions()
        assert await _prepared_statements(session) == 0
        await session.close()
    finally:
        await database.dispose()


@pytest.mark.parametrize("how", ["flushed", "executed", "pending", "on the driver"])
async def test_a_request_that_wrote_and_did_not_commit_is_rolled_back(fresh_settings, how):
    await _owner_creates_table(fresh_settings, "note")
    database = Database(fresh_settings)
    try:
        session = database.sessions()
        if how == "flushed":
            await institution_named(session, "leiden-scgt")
        elif how == "executed":
            await session.execute(text("INSERT INTO note VALUES (1, 'left behind')"))
        elif how == "pending":  # added, not flushed: committing would flush it
            await session.execute(select(literal(1)))
            session.add(Institution(slug="pending", name="Pending", country="NL", sector="academic",
                                    transfer_basis="eea", origin_node="local"))  # fmt: skip
        else:  # a statement that writes, run on the driver
            insert = text("INSERT INTO note VALUES (2, 'on the driver') RETURNING id")
            assert await DriverStatement(insert, writes=True).rows(session) == [(2,)]
        await end_request(session)
        async with database.sessions() as session:
            assert await session.scalar(select(Institution.id)) is None
            assert await session.scalar(text("SELECT count(*) FROM note")) == 0
    finally:
        await database.dispose()


async def test_a_request_whose_statement_failed_ends_without_an_error(fresh_settings):
    database = Database(fresh_settings)
    try:
        session = database.sessions()
        with pytest.raises(ProgrammingError):
            await session.execute(text("SELECT * FROM no_such_table"))
        await end_request(session)
        async with database.sessions() as session:
            assert await session.scalar(select(literal(1))) == 1
    finally:
        await database.dispose()


async def test_a_failed_statements_error_names_the_statement_but_not_the_values(session):
    """Values are what users and sources sent (lay summaries, donor data); errors end up in logs and job records."""
    secret = "lay summary of patient 4711"
    with pytest.raises(DBAPIError) as failed:
        await session.execute(text("SELECT CAST(:count AS integer), :summary"), {"count": "x", "summary": secret})
    assert "SELECT CAST" in str(failed.value) and secret not in str(failed.value)
