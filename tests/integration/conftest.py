"""Fixtures on the real servers that scripts/test.sh starts: a fresh PostgreSQL database per test, Redis."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from migrations.apply import upgrade_to_head
from models.settings import Settings
from models.storage.database import close_engine


def server_url(variable: str, scheme: str) -> str:
    """A server URL from the environment; a missing server fails the run, it is never skipped."""
    value = os.environ.get(variable, "")
    if not value.startswith(scheme):
        pytest.fail(
            f"{variable} must point at a running {scheme} server for the integration tests "
            f"(got {value!r}); run them through `make test`, which starts PostgreSQL and Redis"
        )
    return value


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """An empty database of its own on the test PostgreSQL server, dropped afterwards."""
    server = make_url(server_url("GRAFT_DATABASE_URL", "postgresql"))
    name = f"graft_test_{secrets.token_hex(6)}"
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = server.set(database=name).render_as_string(hide_password=False)
    yield url
    close_engine(url)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> str:
    return server_url("GRAFT_BROKER_URL", "redis")


@pytest.fixture
def production_settings(postgres_url: str, redis_url: str, tmp_path: Path) -> Settings:
    upgrade_to_head(postgres_url)
    return Settings(
        data_dir=tmp_path / "var",
        database_url=postgres_url,
        broker_url=redis_url,
        heartbeat_seconds=0.5,
        lease_seconds=30,
        stop_grace_seconds=10.0,
        tenant_max_active_jobs=1000,
    )
