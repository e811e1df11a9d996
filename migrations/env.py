"""Alembic environment: migrates the database named by the config, or by GRAFT_DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from models.settings import Settings
from models.storage.database import get_engine
from models.storage.tables import Base

config = context.config


def _database_url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings().database_url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=_database_url(), target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    with get_engine(_database_url()).connect() as connection:
        if connection.dialect.name == "sqlite":
            # Batch mode alters a table by copying it and dropping the original, which rows of other
            # tables still reference: foreign keys are off while migrating (they cannot be switched
            # inside a transaction, so this goes to the driver before any begins) and on again after.
            driver = connection.connection.driver_connection
            assert driver is not None
            driver.execute("PRAGMA foreign_keys=OFF")
            try:
                _run(connection)
            finally:
                driver.execute("PRAGMA foreign_keys=ON")
        else:
            _run(connection)
