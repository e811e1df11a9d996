"""One poller per API process for every open event stream: one database read per interval, however many streams.

A stream does not hold a connection while it waits: it subscribes to its job here, and the feed,
while anyone listens, reads the statuses and new events of all subscribed jobs in one short read
(models.services.event_stream_reads.poll_jobs) and hands each subscriber its job's share. A
subscriber that falls behind (its buffer of SUBSCRIBER_BUFFER items is full: a client not reading)
is told so and catches up from the database on its own, so one slow reader never holds the feed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.to_thread
from anyio import CapacityLimiter
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from models.services.event_stream_reads import EventRow, JobsPoll, StreamCursor, newest_sequence, poll_jobs
from models.states import TERMINAL_STATUSES, JobStatus
from models.storage.database import run_read

logger = logging.getLogger(__name__)

SUBSCRIBER_BUFFER = 1000
T = TypeVar("T")


@dataclass(frozen=True)
class JobEnded:
    """The job reached a terminal status; every event before it was delivered."""

    status: JobStatus


@dataclass(frozen=True)
class FellBehind:
    """The subscriber's buffer overflowed: items were dropped, read the database from your own cursor."""


FeedItem = EventRow | JobEnded | FellBehind


class Subscription:
    """What the feed delivers for one job to one stream: events, then JobEnded; or FellBehind."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._send: MemoryObjectSendStream[FeedItem]
        self._send, self.items = anyio.create_memory_object_stream[FeedItem](SUBSCRIBER_BUFFER)
        self.behind = False

    def deliver(self, item: FeedItem) -> None:
        if self.behind:
            return  # the stream rereads the database; what it missed is there
        try:
            self._send.send_nowait(item)
        except anyio.WouldBlock:
            self.behind = True
            self._drain_then_report_behind()

    def caught_up(self) -> None:
        """The stream has reread the database after FellBehind: deliver again."""
        self.behind = False

    def _drain_then_report_behind(self) -> None:
        receive: MemoryObjectReceiveStream[FeedItem] = self.items
        while True:
            try:
                receive.receive_nowait()
            except anyio.WouldBlock:
                break
        self._send.send_nowait(FellBehind())

    def close(self) -> None:
        self._send.close()
        self.items.close()


class JobEventFeed:
    """Polls every `poll_seconds` while any stream is subscribed; idle (no reads) otherwise.

    `run` is started once, in the app's lifespan, and runs until cancelled.
    """

    def __init__(self, database_url: str, *, poll_seconds: float, limiter: CapacityLimiter) -> None:
        self._database_url = database_url
        self._poll_seconds = poll_seconds
        self._limiter = limiter
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._someone_listens = anyio.Event()
        # Set once, when the feed starts, and never reset: after an idle spell the next poll reads
        # from where the feed stopped, so no event between a stream's history and the feed is lost.
        self._cursor: StreamCursor | None = None
        self.polls = 0  # how many reads the feed made: one per interval, not one per stream

    @property
    def subscriber_count(self) -> int:
        return sum(len(group) for group in self._subscriptions.values())

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[Subscription]:
        """Deliver `job_id`'s events from the next poll on, until the block ends."""
        subscription = Subscription(job_id)
        self._subscriptions.setdefault(job_id, set()).add(subscription)
        self._someone_listens.set()
        try:
            yield subscription
        finally:
            group = self._subscriptions.get(job_id, set())
            group.discard(subscription)
            if not group:
                self._subscriptions.pop(job_id, None)
            subscription.close()

    async def run(self) -> None:
        while True:
            try:
                if self._cursor is None:
                    # Before any stream subscribes: each reads its own history after subscribing, so
                    # everything past this point reaches it either from that read or from the feed.
                    self._cursor = StreamCursor.at(await self._read_in_thread(newest_sequence))
                break
            except SQLAlchemyError as error:
                logger.warning("event feed: could not read the database: %s", type(error).__name__)
                await anyio.sleep(self._poll_seconds)
        while True:
            if not self._subscriptions:
                self._someone_listens = anyio.Event()
                await self._someone_listens.wait()
            try:
                await self._poll_once()
            except SQLAlchemyError as error:
                # The streams stay open (their heartbeats go on); the next poll retries.
                logger.warning("event feed: could not read the database: %s", type(error).__name__)
            await anyio.sleep(self._poll_seconds)

    async def _poll_once(self) -> None:
        job_ids = list(self._subscriptions)
        if not job_ids:
            return
        cursor = self._cursor
        assert cursor is not None  # set before the first subscriber is served
        poll = await self._read_in_thread(lambda connection: poll_jobs(connection, job_ids, cursor))
        self.polls += 1
        self._deliver(poll)

    async def _read_in_thread(self, read: Callable[[Connection], T]) -> T:
        return await anyio.to_thread.run_sync(run_read, self._database_url, read, limiter=self._limiter)

    def _deliver(self, poll: JobsPoll) -> None:
        for row in poll.events:
            for subscription in list(self._subscriptions.get(row.job_id, ())):
                subscription.deliver(row)
        for job_id, status in poll.statuses.items():
            if status in TERMINAL_STATUSES:
                for subscription in list(self._subscriptions.get(job_id, ())):
                    subscription.deliver(JobEnded(status))
