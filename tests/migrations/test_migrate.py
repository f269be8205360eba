import os
import subprocess

from sqlalchemy import create_engine, text

from cellcommons.migrations import migrate


def _revision(settings):
    engine = create_engine(settings.owner_url)
    with engine.connect() as conn:
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()
    return revision


def test_migrate_is_idempotent(fresh_settings):
    before = _revision(fresh_settings)
    migrate(fresh_settings)
    migrate(fresh_settings)
    assert _revision(fresh_settings) == before


def test_migrate_against_an_unreachable_database_prints_one_clear_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLCOMMONS_")}
    env["CELLCOMMONS_DATABASE_URL"] = "postgresql://owner@127.0.0.1:1/cellcommons"
    result = subprocess.run(["cellcommons", "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: cannot reach the database at 127.0.0.1:1/cellcommons")


def test_migrate_without_a_database_url_names_the_setting(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLCOMMONS_")}
    result = subprocess.run(["cellcommons", "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: CELLCOMMONS_DATABASE_URL is not set"


def test_the_migrations_match_the_models(settings):
    """Autogenerate finds nothing to do: the ORM models and the migrated schema agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    import cellcommons.models  # noqa: F401
    from cellcommons.db import Base

    engine = create_engine(settings.owner_url)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert differences == []
