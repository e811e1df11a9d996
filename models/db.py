"""Engines and sessions: one engine per database URL, SQLite tuned for several writing processes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _make_sqlite_concurrent(engine: Engine) -> None:
    """WAL, a busy timeout, and `BEGIN IMMEDIATE` for every transaction.

    The API, the worker and the training child all write to one SQLite file. pysqlite's deferred
    BEGIN upgrades a read lock to a write lock mid-transaction, which fails with SQLITE_BUSY at
    once, ignoring busy_timeout; taking the write lock up front makes writers queue instead.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let the "begin" hook below issue BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


_ENGINES: dict[str, Engine] = {}


def get_engine(database_url: str) -> Engine:
    """The process-wide engine for `database_url`, created on first use."""
    if database_url not in _ENGINES:
        _ENGINES[database_url] = _create_engine(database_url)
    return _ENGINES[database_url]


def _create_engine(database_url: str) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})
        _make_sqlite_concurrent(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


def session_factory(database_url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(database_url), expire_on_commit=False)


@contextmanager
def session_scope(database_url: str) -> Iterator[Session]:
    """A unit of work: commits on success, rolls back on any error."""
    session = session_factory(database_url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def close_engine(database_url: str) -> None:
    """Close every pooled connection to `database_url` and forget its engine."""
    engine = _ENGINES.pop(database_url, None)
    if engine is not None:
        engine.dispose()
