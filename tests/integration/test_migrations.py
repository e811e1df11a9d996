from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from migrations.apply import downgrade_to_base, upgrade_to_head
from models.storage.database import close_engine, get_engine
from models.storage.tables import Base

TABLES = {
    "tenants",
    "api_keys",
    "files",
    "base_models",
    "jobs",
    "job_events",
    "checkpoints",
    "result_artifacts",
}


def assert_schema_matches_the_models(url: str) -> None:
    with get_engine(url).connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def migrate_down_and_up(url: str) -> None:
    upgrade_to_head(url)
    assert set(inspect(get_engine(url)).get_table_names()) >= TABLES
    assert_schema_matches_the_models(url)
    downgrade_to_base(url)
    assert not TABLES & set(inspect(get_engine(url)).get_table_names())
    upgrade_to_head(url)
    assert_schema_matches_the_models(url)


@pytest.mark.integration
def test_migrations_build_the_models_schema_on_postgresql(postgres_url: str) -> None:
    migrate_down_and_up(postgres_url)


def test_migrations_build_the_models_schema_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'graft.db'}"
    migrate_down_and_up(url)
    close_engine(url)
