"""A job's event log: paging, control events and their per-minute limit."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from models.errors import QuotaExceeded
from models.services import events
from models.services.events import JobControl
from models.settings import Settings
from models.storage.database import session_scope
from models.storage.tables import JobEvent, utc_now


def add_control_events(settings: Settings, job_id: str, *ages_seconds: float) -> None:
    """One control event per age, written that many seconds ago."""
    with session_scope(settings.database_url) as session:
        for age in ages_seconds:
            event = events.append_control_event(session, job_id, JobControl.pause, "Pause requested")
            event.created_at = utc_now() - timedelta(seconds=age)


def check(settings: Settings, job_id: str, per_minute: int | None) -> None:
    with session_scope(settings.database_url) as session:
        events.ensure_control_allowed(session, job_id, per_minute=per_minute)


def test_only_the_jobs_own_control_events_of_the_last_minute_count(
    settings: Settings, new_job: Callable[[], str]
) -> None:
    job_id, other_job_id = new_job(), new_job()
    add_control_events(settings, other_job_id, 1, 1, 1)
    add_control_events(settings, job_id, 61, 30, 20)  # the first has left the window
    with session_scope(settings.database_url) as session:
        for _ in range(5):
            events.append_event(session, job_id, "Step 1/10: training loss=0.7000", data={"step": 1})
    check(settings, job_id, per_minute=3)
    add_control_events(settings, job_id, 10)
    with pytest.raises(QuotaExceeded) as refused:
        check(settings, job_id, per_minute=3)
    assert refused.value.param == "job_control_events_per_minute"


def test_retry_after_is_when_the_oldest_counted_event_leaves_the_minute(
    settings: Settings, new_job: Callable[[], str]
) -> None:
    job_id = new_job()
    add_control_events(settings, job_id, 50, 10, 5)
    with session_scope(settings.database_url) as session:
        oldest = session.scalars(
            select(JobEvent.created_at).where(JobEvent.job_id == job_id).order_by(JobEvent.sequence.desc()).limit(3)
        ).all()[-1]
    before = utc_now()
    with pytest.raises(QuotaExceeded) as refused:
        check(settings, job_id, per_minute=3)
    after = utc_now()
    frees_at = oldest + timedelta(seconds=events.CONTROL_WINDOW_SECONDS)
    latest, earliest = (math.ceil((frees_at - moment).total_seconds()) for moment in (before, after))
    assert earliest <= refused.value.retry_after_seconds <= latest


def test_no_limit_applies_when_none_is_given(settings: Settings, new_job: Callable[[], str]) -> None:
    job_id = new_job()
    add_control_events(settings, job_id, *([1] * 30))
    check(settings, job_id, per_minute=None)


def test_event_pages_return_every_event_once_newest_first(settings: Settings, new_job: Callable[[], str]) -> None:
    job_id = new_job()
    with session_scope(settings.database_url) as session:
        for number in range(250):
            events.append_event(session, job_id, f"event {number}")
        session.execute(update(JobEvent).where(JobEvent.job_id == job_id).values(created_at=utc_now()))
    with session_scope(settings.database_url) as session:
        expected = list(
            session.scalars(select(JobEvent.id).where(JobEvent.job_id == job_id).order_by(JobEvent.sequence.desc()))
        )
    seen: list[str] = []
    after: str | None = None
    while True:
        with session_scope(settings.database_url) as session:
            rows, has_more = events.list_events(session, job_id, after=after, limit=100)
        seen += [row.id for row in rows]
        if not has_more:
            break
        after = seen[-1]
    assert seen == expected
    assert len(expected) == 253  # the three the job was created with, too
