"""The reads behind event streams: history in pages, polls that find a commit landing below the cursor."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest
from sqlalchemy import Connection

from models.services import event_stream_reads, events
from models.services.event_stream_reads import StreamCursor, history_page, poll_jobs
from models.settings import Settings
from models.states import JobStatus
from models.storage.database import run_read, session_scope
from models.storage.tables import Job, JobEvent

T = TypeVar("T")


def write(settings: Settings, job_id: str, message: str, *, sequence: int | None = None) -> None:
    with session_scope(settings.database_url) as session:
        event = events.append_event(session, job_id, message)
        if sequence is not None:
            event.sequence = sequence  # a number drawn before the ones already committed: a late commit


def messages(rows: list[event_stream_reads.EventRow]) -> list[str]:
    return [row.message for row in rows]


def read(settings: Settings, work: Callable[[Connection], T]) -> T:
    return run_read(settings.database_url, work)


def test_history_is_read_in_pages_oldest_first_until_the_last(
    settings: Settings, new_job: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_stream_reads, "HISTORY_PAGE_EVENTS", 2)
    job_id = new_job()
    before = read(settings, lambda connection: event_stream_reads.newest_sequence(connection))
    cursor = StreamCursor.at(before)
    for step in range(5):
        write(settings, job_id, f"step {step}")

    pages = []
    while True:
        page = read(settings, lambda connection: history_page(connection, job_id, cursor))
        pages.append(messages(page.events))
        if page.is_last:
            break

    assert pages == [["step 0", "step 1"], ["step 2", "step 3"], ["step 4"]]


def test_a_poll_finds_an_event_committed_below_the_cursor_and_never_repeats_one(
    settings: Settings, new_job: Callable[[], str]
) -> None:
    job_id, other_job_id = new_job(), new_job()
    with session_scope(settings.database_url) as session:
        gap = (session.query(JobEvent.sequence).order_by(JobEvent.sequence.desc()).limit(1).scalar() or 0) + 1
    cursor = StreamCursor.at(gap - 1)
    write(settings, job_id, "step 2", sequence=gap + 10)
    write(settings, other_job_id, "elsewhere")
    first = read(settings, lambda connection: poll_jobs(connection, [job_id], cursor))

    write(settings, job_id, "cancel requested", sequence=gap)  # drawn first, committed last
    second = read(settings, lambda connection: poll_jobs(connection, [job_id], cursor))
    third = read(settings, lambda connection: poll_jobs(connection, [job_id], cursor))

    assert messages(first.events) == ["step 2"]
    assert messages(second.events) == ["cancel requested"]
    assert third.events == []
    assert first.statuses == {job_id: JobStatus.queued}


def test_a_poll_reads_statuses_of_every_job_it_names_even_past_one_statement(
    settings: Settings, new_job: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_stream_reads, "POLL_JOBS_PER_STATEMENT", 2)
    job_ids = [new_job() for _ in range(5)]
    with session_scope(settings.database_url) as session:
        session.get_one(Job, job_ids[4]).status = JobStatus.succeeded.value
    cursor = StreamCursor.at(read(settings, event_stream_reads.newest_sequence))
    for job_id in job_ids:
        write(settings, job_id, f"event of {job_id}")

    poll = read(settings, lambda connection: poll_jobs(connection, job_ids, cursor))

    assert poll.statuses == {job_id: JobStatus.queued for job_id in job_ids[:4]} | {job_ids[4]: JobStatus.succeeded}
    assert sorted(messages(poll.events)) == sorted(f"event of {job_id}" for job_id in job_ids)


def test_an_unknown_last_event_id_has_no_sequence(settings: Settings, new_job: Callable[[], str]) -> None:
    job_id = new_job()

    assert read(settings, lambda connection: event_stream_reads.event_sequence(connection, job_id, "ftevent-x")) is None
    assert read(settings, lambda connection: event_stream_reads.event_sequence(connection, job_id, "../etc")) is None
