"""Reads on the event loop: an asyncio pool of autocommit PostgreSQL connections for the API's most polled route.

Every dashboard polls `GET /v1/fine_tuning/jobs/{id}`. Through the threadpool (models.storage.database.run_read)
each poll paid a thread hop, GIL hand-offs between the event loop and that thread, and SQLAlchemy's
execution machinery: about 0.7 ms of API CPU over what `/healthz` costs, so a job GET managed
0.38× `/healthz`'s requests/s (bench/api.py). On psycopg's own asyncio connections, awaited on the
event loop, the same statement costs a fraction of that.

The connections are in autocommit mode, like run_read's: each statement reads the latest committed
data by itself, with no round trip for BEGIN, ROLLBACK or a ping. Errors come out as SQLAlchemy's
DBAPIError, so the API answers a database hiccup with the same 503 as everywhere else
(models.storage.database.is_transient_database_error). SQLite has no such pool: its driver has no asyncio API,
and a read of a local file is cheap on the threadpool (AsyncReadPool.for_database is None there).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from models.storage.database import READ_POOL_RECYCLE_SECONDS, READ_POOL_SIZE

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long a read waits for a free connection (or, during an outage, for one to be opened) before
# it fails with a 503 the client may retry; a healthy read holds its connection well under 1 ms.
READ_POOL_WAIT_SECONDS = 2.0
# psycopg_pool retries a connection that failed to open with doubling delays (1, 2, 4 … s) for up
# to this long, then gives up on it, and a read that finds no connection starts a fresh attempt at
# once. Kept short (the pool's default is 5 minutes), so that after an outage the pool's next
# attempt never lags far behind a server that is back.
READ_POOL_RECONNECT_SECONDS = 5.0
# How the pool's connections show in pg_stat_activity.
READ_POOL_APPLICATION_NAME = "graft-api-reads"

AsyncRead = Callable[[AsyncConnection[Any]], Awaitable[T]]


class AsyncReadPool:
    """READ_POOL_SIZE autocommit connections to one PostgreSQL database, for reads awaited on the event loop.

    It belongs to the event loop that opens it: the API opens it in its lifespan and closes it at
    shutdown (api.main).
    """

    def __init__(self, database_url: str) -> None:
        conninfo = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=READ_POOL_SIZE,
            max_size=READ_POOL_SIZE,
            kwargs={"autocommit": True, "application_name": READ_POOL_APPLICATION_NAME},
            max_lifetime=READ_POOL_RECYCLE_SECONDS,
            timeout=READ_POOL_WAIT_SECONDS,
            reconnect_timeout=READ_POOL_RECONNECT_SECONDS,
            name="graft-reads",
            open=False,
        )

    @classmethod
    def for_database(cls, database_url: str) -> AsyncReadPool | None:
        """A pool for a PostgreSQL URL; None for SQLite, whose reads stay on the threadpool."""
        return cls(database_url) if make_url(database_url).get_backend_name() == "postgresql" else None

    async def open(self) -> None:
        """Start opening the connections in the background; the API starts even while the database is down."""
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    async def run(self, read: AsyncRead[T]) -> T:
        """`await read(connection)` on a pooled connection; returns its result. `read` must not write.

        A connection the server dropped while it sat idle (a restart, an idle timeout) fails its
        first statement. The pool then checks its other idle connections, replacing the dead
        ones, and `read` runs once more; since it only reads, running it twice is harmless.
        """
        try:
            return await self._run_once(read)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            logger.warning("a pooled read connection was dropped; checking the others and reading again")
        await self._pool.check()
        return await self._run_once(read)

    async def _run_once(self, read: AsyncRead[T]) -> T:
        connection: AsyncConnection[Any] | None = None
        try:
            async with self._pool.connection() as connection:
                return await read(connection)
        except psycopg.Error as error:  # psycopg_pool.PoolTimeout is an OperationalError too
            dropped = connection is not None and connection.broken
            raise DBAPIError.instance(None, None, error, psycopg.Error, connection_invalidated=dropped) from error
