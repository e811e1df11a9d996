"""A job's events as Server-Sent Events: its history, then each new event as it is written, until the job ends.

Each message's `id` is the event's id, so a client that reconnects with `Last-Event-ID` continues
after the last event it got. Its `data` is the event object the list endpoint returns. When the job
reaches a terminal status, one last message of type `end` carries `{"id", "status"}` and the stream
closes; a paused job's stream stays open, since a resume continues it. Comments (`: ping`) keep
idle connections alive.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from sqlalchemy import Connection, select
from sse_starlette import ServerSentEvent

from api.event_feed import FellBehind, JobEnded, JobEventFeed
from models.errors import InvalidRequest
from models.services import job_views
from models.services.event_stream_reads import EventRow, StreamCursor, event_sequence, history_page
from models.services.job_views import UnservableRow
from models.states import TERMINAL_STATUSES, JobStatus
from models.storage.database import run_read
from models.storage.tables import Job

END_EVENT = "end"
T = TypeVar("T")


@dataclass(frozen=True)
class StreamSource:
    """What a stream reads from: the feed, the database, and the threads database reads may take."""

    feed: JobEventFeed
    database_url: str
    limiter: CapacityLimiter

    async def read(self, read: Callable[[Connection], T]) -> T:
        return await anyio.to_thread.run_sync(run_read, self.database_url, read, limiter=self.limiter)


def resume_point(connection: Connection, job_id: str, last_event_id: str | None) -> StreamCursor:
    """A cursor after `last_event_id` (from the start without one); 400 for an id that is not the job's event."""
    if last_event_id is None:
        return StreamCursor()
    sequence = event_sequence(connection, job_id, last_event_id)
    if sequence is None:
        raise InvalidRequest(
            f"Last-Event-ID: {last_event_id!r} is not an event of job {job_id}; reconnect without it to "
            "read the stream from the start",
            param="Last-Event-ID",
        )
    return StreamCursor.at(sequence)


async def job_event_messages(source: StreamSource, job_id: str, cursor: StreamCursor) -> AsyncIterator[ServerSentEvent]:
    """The stream's messages: the events after `cursor`, oldest first, then live ones, then `end`."""
    with source.feed.subscribe(job_id) as subscription:
        # Subscribed before reading: whatever is written after this read reaches the stream through the feed.
        status = await source.read(lambda connection: _status(connection, job_id))
        async for row in _history(source, job_id, cursor):
            if (message := _event_message(row)) is not None:
                yield message
        if status in TERMINAL_STATUSES:
            yield _end_message(job_id, status)
            return
        async for item in subscription.items:
            if isinstance(item, JobEnded):
                yield _end_message(job_id, item.status)
                return
            if isinstance(item, FellBehind):
                subscription.caught_up()  # first: what the feed brings during the reread is kept, then deduplicated
                async for row in _history(source, job_id, cursor):
                    if (message := _event_message(row)) is not None:
                        yield message
                continue
            for row in cursor.take([item]):
                if (message := _event_message(row)) is not None:
                    yield message


async def _history(source: StreamSource, job_id: str, cursor: StreamCursor) -> AsyncIterator[EventRow]:
    while True:
        page = await source.read(lambda connection: history_page(connection, job_id, cursor))
        for row in page.events:
            yield row
        if page.is_last:
            return


def _status(connection: Connection, job_id: str) -> JobStatus:
    status = connection.scalar(select(Job.status).where(Job.id == job_id))
    assert status is not None  # the route found the job, and jobs are never deleted
    return JobStatus(status)


def _event_message(row: EventRow) -> ServerSentEvent | None:
    """The event's message; None for a damaged row, which is left out as the list endpoint leaves it out."""
    try:
        event = job_views.event_read(row)  # type: ignore[arg-type]  # a Core row has the ORM object's attributes
    except UnservableRow:
        return None  # logged where it was raised
    return ServerSentEvent(data=event.model_dump_json(), id=event.id)


def _end_message(job_id: str, status: JobStatus) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps({"id": job_id, "status": status.value}), event=END_EVENT)
