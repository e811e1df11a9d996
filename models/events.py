"""A job's event log: what happened, in order, as the events endpoint and dashboards show it."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.errors import InvalidRequest
from models.ids import IdPrefix, is_well_formed, new_id
from models.tables import JobEvent


class EventLevel(StrEnum):
    info = "info"
    warn = "warn"
    error = "error"


class EventType(StrEnum):
    message = "message"
    metrics = "metrics"


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
        raise InvalidRequest(f"after: {after!r} is not an event of this job", param="after")
    return sequence
