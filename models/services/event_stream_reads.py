"""The reads behind live event streams: a job's events after a cursor, and one poll that serves many streams.

A stream must see every event exactly once although it reads in pieces: its history first, then
what each poll brings. `sequence` orders events, but on PostgreSQL two transactions may commit in
the opposite order of their sequence numbers (a cancel request's event while a run writes a step),
so a reader that only asked for `sequence > cursor` could step over the late one for good. Every
poll therefore starts from where its cursor stood LATE_COMMIT_SECONDS ago, and drops the ids it
has already seen (StreamCursor). A sequence number is drawn when its event is inserted, and the
transaction that inserts it commits well within that window. (A cursor that starts now, at the
newest sequence, cannot know of a commit still pending below it: a feed is started once and kept.)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Row, select

from models.ids import IdPrefix, is_well_formed
from models.states import JobStatus
from models.storage.tables import Job, JobEvent

LATE_COMMIT_SECONDS = 30.0
# History is read in pages of this many events, so a stream's first read never loads a long job whole.
HISTORY_PAGE_EVENTS = 500
# The most jobs one poll statement names; a feed serving more polls them in several statements.
POLL_JOBS_PER_STATEMENT = 500

EventRow = Row[Any]
_EVENTS = JobEvent.__table__


@dataclass
class StreamCursor:
    """Where a reader stands in the events: the highest sequence read, where it stood a while ago, the ids
    read recently. Reads go from `floor`, so that a late commit below `sequence` is still found."""

    sequence: int = 0
    _floor: int = 0
    _marks: deque[tuple[float, int]] = field(default_factory=deque)  # (monotonic time, sequence then)
    _recent_ids: dict[str, float] = field(default_factory=dict)  # id → monotonic time it was read

    @classmethod
    def at(cls, sequence: int) -> StreamCursor:
        """A cursor that has read everything up to `sequence`."""
        return cls(sequence=sequence, _floor=sequence)

    @property
    def floor(self) -> int:
        """The sequence the cursor stood at LATE_COMMIT_SECONDS ago: no event below it can still commit."""
        horizon = time.monotonic() - LATE_COMMIT_SECONDS
        while self._marks and self._marks[0][0] <= horizon:
            self._floor = self._marks.popleft()[1]
        return self._floor

    def take(self, rows: Iterable[EventRow]) -> list[EventRow]:
        """The rows not read before, in sequence order; moves the cursor past them."""
        now = time.monotonic()
        fresh = []
        for row in sorted(rows, key=lambda row: row.sequence):
            if row.id in self._recent_ids:
                continue
            self._recent_ids[row.id] = now
            self.sequence = max(self.sequence, row.sequence)
            fresh.append(row)
        self._marks.append((now, self.sequence))
        # An id is remembered while a read from the floor can bring its row back, and a little longer.
        forget_before = now - 2 * LATE_COMMIT_SECONDS
        for event_id in [event_id for event_id, at in self._recent_ids.items() if at < forget_before]:
            del self._recent_ids[event_id]
        return fresh


def event_sequence(connection: Connection, job_id: str, event_id: str) -> int | None:
    """The sequence of the job's event `event_id`, or None if the job has no such event. Reads only."""
    if not is_well_formed(event_id, IdPrefix.event):
        return None
    sequence: int | None = connection.scalar(
        select(JobEvent.sequence).where(JobEvent.id == event_id, JobEvent.job_id == job_id)
    )
    return sequence


@dataclass(frozen=True)
class HistoryPage:
    events: list[EventRow]  # oldest first; the cursor has moved past them
    is_last: bool  # nothing more was there to read


def history_page(connection: Connection, job_id: str, cursor: StreamCursor) -> HistoryPage:
    """The job's next events after the cursor's sequence, up to HISTORY_PAGE_EVENTS; moves the cursor.

    History is read by sequence alone: the live tail (poll_jobs) is what rereads the late-commit window.
    Reads only.
    """
    rows = connection.execute(
        select(_EVENTS)
        .where(JobEvent.job_id == job_id, JobEvent.sequence > cursor.sequence)
        .order_by(JobEvent.sequence)
        .limit(HISTORY_PAGE_EVENTS)
    ).all()
    return HistoryPage(cursor.take(rows), is_last=len(rows) < HISTORY_PAGE_EVENTS)


@dataclass(frozen=True)
class JobsPoll:
    """One poll of many jobs: each job's status at the start of the poll, and events the cursor had not read."""

    statuses: dict[str, JobStatus]
    events: list[EventRow]  # in sequence order; the cursor has moved past them


def poll_jobs(connection: Connection, job_ids: Sequence[str], cursor: StreamCursor) -> JobsPoll:
    """The statuses of `job_ids`, then their events from the cursor's floor that it has not read; moves it.

    The statuses are read first: an end state is committed with the events that describe it, so
    the events read after a terminal status include the job's last ones. A job missing from
    `statuses` does not exist. Reads only.
    """
    floor = cursor.floor
    statuses: dict[str, JobStatus] = {}
    rows: list[EventRow] = []
    chunks = [
        list(job_ids[start : start + POLL_JOBS_PER_STATEMENT])
        for start in range(0, len(job_ids), POLL_JOBS_PER_STATEMENT)
    ]
    for chunk in chunks:
        for job_id, status in connection.execute(select(Job.id, Job.status).where(Job.id.in_(chunk))):
            statuses[job_id] = JobStatus(status)
    for chunk in chunks:
        rows += connection.execute(
            select(_EVENTS).where(JobEvent.job_id.in_(chunk), JobEvent.sequence > floor).order_by(JobEvent.sequence)
        ).all()
    return JobsPoll(statuses, cursor.take(rows))


def newest_sequence(connection: Connection) -> int:
    """The highest event sequence now: where a new feed starts reading. Reads only."""
    return int(connection.scalar(select(JobEvent.sequence).order_by(JobEvent.sequence.desc()).limit(1)) or 0)
