"""Alembic migrations of the store's schema, applied when a Store opens (`migrate`).

A schema change is a new file in versions/ (`revision`, `down_revision` = the newest before it)
whose upgrade runs SQL both SQLite and PostgreSQL take through voice.server.db.Connection; the
tables' create() functions stay as they are and are never changed to alter a table."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine

HERE = Path(__file__).parent
LOCK_ID = 0x766F696365  # PostgreSQL advisory lock ("voice"): one server migrates at a time


def migrate(engine: Engine) -> None:
    """Upgrade the database to the newest revision. A store written before migrations existed
    (its tables, no alembic_version) gets revision 0001, whose statements all create only what
    is missing, so it keeps its data. Servers starting together on PostgreSQL take turns."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(HERE))
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({LOCK_ID})")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()


__all__ = ["migrate"]
