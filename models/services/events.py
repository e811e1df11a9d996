"""A job's event log: what happened, in order, as the events endpoint and dashboards show it."""

from __future__ import annotations

import math
from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.errors import InvalidRequest, QuotaExceeded
from models.ids import IdPrefix, is_well_formed, new_id
from models.storage.tables import JobEvent, utc_now

# A page of events may be this long: a 3-epoch job writes 160 and more (OpenAI caps its pages at 100).
MAX_EVENT_PAGE_LIMIT = 1000
# The window over which a job's pause, resume and cancel requests are counted.
CONTROL_WINDOW_SECONDS = 60
# The key in an event's `data` that marks it as written by a user's control request, naming the request.
CONTROL_KEY = "control"


class EventLevel(StrEnum):
    info = "info"
    warn = "warn"
    error = "error"


class EventType(StrEnum):
    message = "message"
    metrics = "metrics"


class JobControl(StrEnum):
    """The user's requests that change a job's course; the events they write carry `{"control": <request>}`."""

    pause = "pause"
    resume = "resume"
    cancel = "cancel"


def append_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: EventLevel = EventLevel.info,
    event_type: EventType = EventType.message,
    data: dict[str, Any] | None = None,
) -> JobEvent:
    """Add one event to the session; the caller commits (together with the change it describes)."""
    event = JobEvent(
        id=new_id(IdPrefix.event),
        job_id=job_id,
        level=level.value,
        event_type=event_type.value,
        message=message,
        data=data,
    )
    session.add(event)
    return event


def append_control_event(
    session: Session, job_id: str, control: JobControl, message: str, *, data: dict[str, Any] | None = None
) -> JobEvent:
    """`append_event` for what a pause, resume or cancel request did; `ensure_control_allowed` counts these."""
    return append_event(session, job_id, message, data={CONTROL_KEY: control.value, **(data or {})})


def ensure_control_allowed(session: Session, job_id: str, *, per_minute: int | None) -> None:
    """Raise QuotaExceeded (429) when the job's control requests wrote `per_minute` events in the last minute.

    Call before a pause, resume or cancel request writes anything; None means no limit (the API
    passes its setting; an operator's own tools need none). `retry_after_seconds` is when the
    oldest of those events leaves the window. Two racing requests may both pass on PostgreSQL (read
    committed); the limit bounds the event log's growth, and one event over it is no breach. Reads only.
    """
    if per_minute is None:
        return
    now = utc_now()
    recent = list(
        session.scalars(
            select(JobEvent.created_at)
            .where(
                JobEvent.job_id == job_id,
                JobEvent.created_at > now - timedelta(seconds=CONTROL_WINDOW_SECONDS),
                JobEvent.data[CONTROL_KEY].as_string().is_not(None),
            )
            .order_by(JobEvent.sequence.desc())
            .limit(per_minute)
        )
    )
    if len(recent) < per_minute:
        return
    frees_at = recent[-1] + timedelta(seconds=CONTROL_WINDOW_SECONDS)
    retry_after = max(1, math.ceil((frees_at - now).total_seconds()))
    raise QuotaExceeded(
        f"Job {job_id} took {per_minute} pause and resume requests in the last minute, the most "
        f"allowed (job_control_events_per_minute={per_minute}); retry in {retry_after} seconds (cancelling is "
        "always allowed).",
        param="job_control_events_per_minute",
        retry_after_seconds=retry_after,
    )


def newest_control_event(session: Session, job_id: str, control: JobControl) -> JobEvent | None:
    """The job's most recent event written by a `control` request, or None."""
    return session.scalar(
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.data[CONTROL_KEY].as_string() == control.value)
        .order_by(JobEvent.sequence.desc())
        .limit(1)
    )


def list_events(session: Session, job_id: str, *, after: str | None, limit: int) -> tuple[list[JobEvent], bool]:
    """Newest first, as OpenAI lists them; `after` is the id of the last event of the previous page.

    Returns (events, has_more). Raises InvalidRequest for a cursor that is not one of this job's events.
    """
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        cursor = _event_cursor(session, job_id, after)
        query = query.where(JobEvent.sequence < cursor)
    rows = list(session.scalars(query.order_by(JobEvent.sequence.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def _event_cursor(session: Session, job_id: str, after: str) -> int:
    sequence = None
    if is_well_formed(after, IdPrefix.event):
        sequence = session.scalar(select(JobEvent.sequence).where(JobEvent.id == after, JobEvent.job_id == job_id))
    if sequence is None:
        raise InvalidRequest(
            f"after: {after!r} is not an event of this job; pass the id of the last event of the previous page",
            param="after",
        )
    return sequence
