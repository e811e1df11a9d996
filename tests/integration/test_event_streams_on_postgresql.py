"""Event streams on PostgreSQL, where two transactions can commit in the opposite order of their event sequences."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from models.services import event_stream_reads, events
from models.services.event_stream_reads import StreamCursor, poll_jobs
from models.settings import Settings
from models.storage.database import run_read, session_factory, session_scope
from tests.api.test_event_streams import (  # noqa: F401 - collected here again, against PostgreSQL
    served,
    stream_settings,
    test_a_finished_jobs_stream_replays_its_events_oldest_first_then_ends,
    test_a_live_stream_carries_new_events_as_they_are_written_and_closes_when_the_job_ends,
    test_a_stream_resumes_after_its_last_event_id,
    test_many_streams_share_one_database_read_per_poll,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(production_settings: Settings) -> Settings:
    return production_settings


def test_an_event_whose_transaction_commits_after_a_later_ones_still_reaches_the_poll(
    settings: Settings, new_job: Callable[[], str]
) -> None:
    job_id = new_job()
    cursor = StreamCursor.at(run_read(settings.database_url, event_stream_reads.newest_sequence))
    slow = session_factory(settings.database_url)()
    try:
        events.append_event(slow, job_id, "Cancel requested")
        slow.flush()  # its sequence is drawn now; the transaction stays open
        with session_scope(settings.database_url) as session:
            events.append_event(session, job_id, "Step 7/10")
        first = run_read(settings.database_url, lambda connection: poll_jobs(connection, [job_id], cursor))
        slow.commit()
    finally:
        slow.close()
    second = run_read(settings.database_url, lambda connection: poll_jobs(connection, [job_id], cursor))

    assert [row.message for row in first.events] == ["Step 7/10"]
    assert [row.message for row in second.events] == ["Cancel requested"]
