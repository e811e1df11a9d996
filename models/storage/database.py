"""Engines, sessions and retried transactions: one engine per database URL, SQLite tuned for several writers."""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 30_000

# 6 attempts, waits of 0.1, 0.2, 0.4, 0.8, 1.6 s (each × 0.5–1.0 jitter): a hiccup of up to ≈3 s
# is ridden out, and a real outage surfaces after 1.55–3.1 s of waiting.
TRANSACTION_ATTEMPTS = 6
FIRST_RETRY_DELAY_SECONDS = 0.1
MAX_RETRY_DELAY_SECONDS = 2.0

# SQLSTATEs after which the same transaction can simply run again on a fresh connection.
TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "57P01",  # admin_shutdown: the server is stopping or restarting, or the backend was terminated
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: the server is starting up or in recovery
        "57P05",  # idle_session_timeout
    }
)
TRANSIENT_SQLSTATE_CLASSES = ("08",)  # connection_exception and its subclasses (08000, 08003, 08006, …)
_SQLITE_BUSY = sqlite3.SQLITE_BUSY  # "database is locked" (another connection holds the write lock)
_SQLITE_LOCKED = sqlite3.SQLITE_LOCKED  # "database table is locked" (a conflict within one connection)


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
_SESSION_FACTORIES: dict[str, sessionmaker[Session]] = {}
_READ_ENGINES: dict[str, Engine] = {}

# Connections an engine keeps open, and how many more it may open at once. An API process runs its
# handlers on 40 threads (anyio's default), and each may hold a connection: with fewer kept open, a
# busy API closed surplus connections as they came back and opened (on PostgreSQL: forked) new ones,
# about one per four requests at 100 clients (bench/api.py), which cost more CPU than the requests.
POOL_SIZE = 40
POOL_MAX_OVERFLOW = 10

# The read pools: run_read's engine, with as many connections as threads may use it at once (api.main
# gives those reads a limiter of this size), so a read never waits for one; and, on PostgreSQL, the
# API's asyncio pool of the same size (models.storage.read_pool).
READ_POOL_SIZE = 8
# Instead of pinging each connection on checkout: a connection is replaced after this long, and a
# read that finds its connection dropped anyway (a server restart) runs once more on a new one.
READ_POOL_RECYCLE_SECONDS = 300


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
    # pool_pre_ping: a pooled connection that the server or the network dropped while idle is
    # replaced on checkout instead of failing the next statement.
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_MAX_OVERFLOW)


def session_factory(database_url: str) -> sessionmaker[Session]:
    """The process-wide session factory for `database_url`.

    Made once: each sessionmaker builds a Session subclass of its own, whose event machinery costs
    more to set up than an API request spends on its query.
    """
    if database_url not in _SESSION_FACTORIES:
        _SESSION_FACTORIES[database_url] = sessionmaker(bind=get_engine(database_url), expire_on_commit=False)
    return _SESSION_FACTORIES[database_url]


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


def run_read(database_url: str, read: Callable[[Connection], T]) -> T:
    """`read(connection)` on a pooled connection that needs no transaction around its reads; returns its result.

    On PostgreSQL the connection is in autocommit mode and comes from a pool of its own without
    pre-ping: each statement reads the latest committed data by itself, and a request spends no
    round trip on BEGIN, ROLLBACK or a ping. A pooled connection that the server dropped while it
    was idle fails its first statement; SQLAlchemy then replaces it (and every older one), and
    `read` runs once more. Since it only reads, running it twice is harmless. SQLite keeps the
    usual engine and transaction (they cost no round trip there). `read` must not write.
    """
    engine = _read_engine(database_url)
    try:
        with engine.connect() as connection:
            return read(connection)
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
    with engine.connect() as connection:
        return read(connection)


def _read_engine(database_url: str) -> Engine:
    if database_url not in _READ_ENGINES:
        engine = get_engine(database_url)
        if engine.dialect.name != "sqlite":
            engine = create_engine(
                engine.url,
                isolation_level="AUTOCOMMIT",
                pool_size=READ_POOL_SIZE,
                max_overflow=0,
                pool_recycle=READ_POOL_RECYCLE_SECONDS,
            )
        _READ_ENGINES[database_url] = engine
    return _READ_ENGINES[database_url]


def close_engine(database_url: str) -> None:
    """Close every pooled connection to `database_url` and forget its engine."""
    _SESSION_FACTORIES.pop(database_url, None)
    read_engine = _READ_ENGINES.pop(database_url, None)
    engine = _ENGINES.pop(database_url, None)
    for pooled in {read_engine, engine}:
        if pooled is not None:
            pooled.dispose()


def is_transient_database_error(error: BaseException) -> bool:
    """Whether `error` is a hiccup after which rerunning the whole transaction can succeed.

    Transient: a connection SQLAlchemy saw drop (`connection_invalidated`); a PostgreSQL
    connection that could not be opened or was lost (a driver OperationalError without SQLSTATE,
    e.g. psycopg's "connection failed: … Connection refused" or "server closed the connection
    unexpectedly"); SQLSTATE class 08 and 40001, 40P01, 57P01, 57P02, 57P03, 57P05; SQLite's
    SQLITE_BUSY ("database is locked") and SQLITE_LOCKED. Everything else, constraint
    violations and domain errors included, is not.
    """
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    driver_error = error.orig
    if isinstance(driver_error, sqlite3.Error):
        # Extended result codes (SQLITE_BUSY_SNAPSHOT, …) keep the primary code in the low byte.
        code = getattr(driver_error, "sqlite_errorcode", None)
        return isinstance(code, int) and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    sqlstate = _sqlstate(driver_error)
    if sqlstate is None:
        # Raised by the client, not the server: the connection could not be made or was lost.
        # (A wrong host, user or database name looks the same, so it fails after the retries.)
        return isinstance(error, OperationalError)
    return sqlstate in TRANSIENT_SQLSTATES or sqlstate.startswith(TRANSIENT_SQLSTATE_CLASSES)


def run_transaction(
    database_url: str,
    work: Callable[[Session], T],
    *,
    attempts: int = TRANSACTION_ATTEMPTS,
    first_delay: float = FIRST_RETRY_DELAY_SECONDS,
    max_delay: float = MAX_RETRY_DELAY_SECONDS,
) -> T:
    """Run `work(session)` in a fresh session and commit; rerun it all after a transient database error.

    Returns what `work` returned, once its transaction committed. Waits `first_delay` seconds
    after the first failed attempt, doubling up to `max_delay`, each wait scaled by a random
    0.5–1.0 so that writers that failed together do not retry together. Re-raises at once any
    error that `is_transient_database_error` does not accept (IntegrityError, LeaseLost, …),
    and the last transient error after `attempts` attempts.

    Why rerunning a whole unit is safe: a failed attempt was rolled back (by the server when the
    connection dropped, by us otherwise), so the rerun starts from the committed state, in a new
    session. Each of our units is a compare-and-set (`UPDATE … WHERE status IN (…) AND attempt = ?`)
    or a write fenced by the run's attempt, and `work` decides again from what it reads.

    The caveat: if the connection is lost after COMMIT was sent, the commit may have happened
    and the unit runs a second time. State cannot go wrong: the second compare-and-set finds the
    status already moved and changes nothing, and a fenced write of the same values is a no-op
    (an event appended in the same unit can be recorded twice). But the second run reports that
    it lost the race: a unit whose caller acts on that answer (claim, complete) must tell "I
    already did it" (status is the target and the attempt or lease owner is its own) from
    "another writer did it".

    `work` must not commit, must not touch objects from an earlier session, and must have no
    effects outside the database. Retries are logged at WARNING with the error class and SQLSTATE
    only; no statement or parameter values.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            with session_scope(database_url) as session:
                result = work(session)
            return result
        except DBAPIError as error:
            if attempt == attempts or not is_transient_database_error(error):
                raise
            delay = min(max_delay, first_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            logger.warning(
                "transient database error (%s, SQLSTATE %s, connection invalidated: %s); "
                "retrying the transaction in %.2f s (attempt %d of %d)",
                type(error.orig).__name__,
                _sqlstate(error.orig),
                error.connection_invalidated,
                delay,
                attempt + 1,
                attempts,
            )
            time.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _sqlstate(driver_error: BaseException | None) -> str | None:
    """The SQLSTATE of a PostgreSQL driver error: `sqlstate` in psycopg 3, `pgcode` in psycopg2."""
    code = getattr(driver_error, "sqlstate", None) or getattr(driver_error, "pgcode", None)
    return code if isinstance(code, str) else None
