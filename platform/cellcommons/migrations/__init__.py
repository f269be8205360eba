"""Schema migrations (Alembic), run as the owner role; they grant the application role only what it needs."""

from __future__ import annotations

from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from cellcommons.errors import Unavailable
from cellcommons.settings import Environment, Settings, SettingsError

HERE = Path(__file__).parent


def app_role() -> str:
    """The application role's name, inside a migration script."""
    return context.config.attributes["app_role"]


def describe(url) -> str:
    where = url.host or url.query.get("host") or "localhost"
    return f"{where}:{url.port or 5432}/{url.database}"


def _ensure_app_role(connection, settings: Settings) -> None:
    role = settings.app_role
    exists = connection.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar()
    if exists:
        return
    if settings.environment is Environment.production:
        raise SettingsError([f"the application role {role!r} does not exist; create it (LOGIN) before migrating"])
    # demo/test only: the servers there use trust authentication, so the role needs no password.
    connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["owner_url"] = settings.owner_url
    config.attributes["app_role"] = settings.app_role
    return config


def migrate(settings: Settings, revision: str = "heads") -> None:
    """Bring the database to `revision`; idempotent, safe to run from several processes at once."""
    engine = create_engine(settings.owner_url)
    try:
        with engine.begin() as connection:
            # Serialises concurrent `migrate` runs (several replicas starting together).
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('cellcommons-migrate'))"))
            _ensure_app_role(connection, settings)
            config = alembic_config(settings)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except OperationalError as exc:
        reason = " ".join(line.strip() for line in str(exc.orig or exc).splitlines() if line.strip())
        raise Unavailable(f"cannot reach the database at {describe(settings.owner_url)}: {reason}") from None
    finally:
        engine.dispose()
