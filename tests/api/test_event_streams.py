"""GET /v1/fine_tuning/jobs/{id}/events?stream=true: Server-Sent Events, resumable, closed when the job ends."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse
from sqlalchemy import event as sqlalchemy_event

from api.main import create_app
from models.services import events
from models.settings import Settings
from models.states import JobStatus
from models.storage.database import _read_engine, session_scope
from models.storage.tables import Job
from tests.live_api import ServedApp, running_server
from tests.processes import wait_for

STREAM_TIMEOUT = httpx.Timeout(10.0, read=10.0)


@pytest.fixture
def stream_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"event_stream_poll_seconds": 0.05, "event_stream_heartbeat_seconds": 0.2})


@pytest.fixture
def served(stream_settings: Settings) -> Iterator[tuple[ServedApp, Any]]:
    app = create_app(stream_settings)
    with running_server(app, stream_settings) as server:
        yield server, app


def set_status(settings: Settings, job_id: str, status: JobStatus, message: str | None = None) -> None:
    """A status change and the event describing it, committed together, as the services write them."""
    with session_scope(settings.database_url) as session:
        session.get_one(Job, job_id).status = status.value
        if message is not None:
            events.append_event(session, job_id, message)


def write_event(settings: Settings, job_id: str, message: str, data: dict[str, Any] | None = None) -> None:
    with session_scope(settings.database_url) as session:
        events.append_event(session, job_id, message, event_type=events.EventType.metrics, data=data)


@dataclass
class StreamReader:
    """An open stream read in a thread: its messages arrive on `received`, and `done` is set when it closes."""

    received: queue.Queue[ServerSentEvent] = field(default_factory=queue.Queue)
    done: threading.Event = field(default_factory=threading.Event)
    status_code: int | None = None

    def next(self, timeout: float = 10.0) -> ServerSentEvent:
        return self.received.get(timeout=timeout)

    def messages(self, count: int) -> list[str]:
        return [json.loads(self.next().data)["message"] for _ in range(count)]

    def messages_through(self, last: str) -> list[str]:
        """Every message up to and including `last`."""
        read = [json.loads(self.next().data)["message"]]
        while read[-1] != last:
            read.append(json.loads(self.next().data)["message"])
        return read


@contextmanager
def open_stream(base_url: str, job_id: str, headers: dict[str, str]) -> Iterator[StreamReader]:
    reader = StreamReader()
    opened = threading.Event()

    def read() -> None:
        with (
            httpx.Client(base_url=base_url, timeout=STREAM_TIMEOUT) as http,
            connect_sse(http, "GET", f"/v1/fine_tuning/jobs/{job_id}/events?stream=true", headers=headers) as source,
        ):
            reader.status_code = source.response.status_code
            opened.set()
            for message in source.iter_sse():
                if message.data:  # httpx-sse reports a heartbeat comment after an event with an id as an empty one
                    reader.received.put(message)
        reader.done.set()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    assert opened.wait(10), "the stream did not open"
    try:
        yield reader
    finally:
        thread.join(timeout=0.1)


def test_a_finished_jobs_stream_replays_its_events_oldest_first_then_ends(
    client: Any, auth: dict[str, str], new_job: Callable[[], str], settings: Settings
) -> None:
    job_id = new_job()
    write_event(settings, job_id, "step 1", {"step": 1})
    set_status(settings, job_id, JobStatus.succeeded, "The job has successfully completed")
    listed = client.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=100", headers=auth).json()["data"]

    with connect_sse(client, "GET", f"/v1/fine_tuning/jobs/{job_id}/events?stream=true", headers=auth) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        messages = list(source.iter_sse())

    *event_messages, end = messages
    assert [json.loads(message.data) for message in event_messages] == list(reversed(listed))
    assert [message.id for message in event_messages] == [event["id"] for event in reversed(listed)]
    assert end.event == "end"
    assert json.loads(end.data) == {"id": job_id, "status": "succeeded"}


def test_a_stream_resumes_after_its_last_event_id(
    client: Any, auth: dict[str, str], new_job: Callable[[], str], settings: Settings
) -> None:
    job_id = new_job()
    for step in (1, 2, 3):
        write_event(settings, job_id, f"step {step}")
    set_status(settings, job_id, JobStatus.cancelled)
    stream_url = f"/v1/fine_tuning/jobs/{job_id}/events?stream=true"
    with connect_sse(client, "GET", stream_url, headers=auth) as source:
        first = list(source.iter_sse())
    step_1 = next(message for message in first if json.loads(message.data)["message"] == "step 1")

    with connect_sse(client, "GET", stream_url, headers={**auth, "Last-Event-ID": step_1.id}) as source:
        resumed = list(source.iter_sse())

    assert [json.loads(message.data)["message"] for message in resumed[:-1]] == ["step 2", "step 3"]
    assert json.loads(resumed[-1].data)["status"] == "cancelled"


def test_a_last_event_id_of_another_job_is_a_400_naming_the_header(
    client: Any, auth: dict[str, str], new_job: Callable[[], str], settings: Settings
) -> None:
    job_id, other_job_id = new_job(), new_job()
    write_event(settings, other_job_id, "elsewhere")
    other_event = client.get(f"/v1/fine_tuning/jobs/{other_job_id}/events", headers=auth).json()["data"][0]["id"]

    response = client.get(
        f"/v1/fine_tuning/jobs/{job_id}/events?stream=true", headers={**auth, "Last-Event-ID": other_event}
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "Last-Event-ID"
    assert other_event in error["message"] and job_id in error["message"]


def test_another_tenants_job_stream_is_404(client: Any, other_auth: dict[str, str], new_job: Callable[[], str]) -> None:
    response = client.get(f"/v1/fine_tuning/jobs/{new_job()}/events?stream=true", headers=other_auth)

    assert response.status_code == 404
    assert response.json()["error"]["param"] == "fine_tuning_job_id"


def test_a_live_stream_carries_new_events_as_they_are_written_and_closes_when_the_job_ends(
    served: tuple[ServedApp, Any], auth: dict[str, str], new_job: Callable[[], str], stream_settings: Settings
) -> None:
    server, _ = served
    job_id = new_job()
    set_status(stream_settings, job_id, JobStatus.running, "Fine-tuning job started")
    with open_stream(server.base_url, job_id, auth) as stream:
        assert stream.status_code == 200
        history = stream.messages_through("Fine-tuning job started")
        write_event(stream_settings, job_id, "Step 1/2", {"step": 1, "total_steps": 2})
        first_live = stream.messages(1)
        write_event(stream_settings, job_id, "Step 2/2", {"step": 2, "total_steps": 2})
        set_status(stream_settings, job_id, JobStatus.succeeded, "The job has successfully completed")
        rest = stream.messages(2)
        end = stream.next()
        assert stream.done.wait(5), "the stream stayed open after the job ended"

    assert history[-1] == "Fine-tuning job started"
    assert first_live == ["Step 1/2"]
    assert rest == ["Step 2/2", "The job has successfully completed"]
    assert (end.event, json.loads(end.data)["status"]) == ("end", "succeeded")


def test_a_paused_jobs_stream_stays_open_and_goes_on_after_the_resume(
    served: tuple[ServedApp, Any], auth: dict[str, str], new_job: Callable[[], str], stream_settings: Settings
) -> None:
    server, _ = served
    job_id = new_job()
    set_status(stream_settings, job_id, JobStatus.paused, "Job paused at step 3")
    with open_stream(server.base_url, job_id, auth) as stream:
        stream.messages_through("Job paused at step 3")
        set_status(stream_settings, job_id, JobStatus.running, "Job resumed")
        assert stream.messages(1) == ["Job resumed"]
        assert not stream.done.is_set()
        set_status(stream_settings, job_id, JobStatus.failed, "Job failed")
        assert stream.messages(1) == ["Job failed"]
        assert stream.next().event == "end"


def test_an_idle_stream_sends_heartbeat_comments(
    served: tuple[ServedApp, Any], auth: dict[str, str], new_job: Callable[[], str], settings: Settings
) -> None:
    server, _ = served
    job_id = new_job()
    with (
        httpx.Client(base_url=server.base_url, timeout=STREAM_TIMEOUT) as http,
        http.stream("GET", f"/v1/fine_tuning/jobs/{job_id}/events?stream=true", headers=auth) as response,
    ):
        lines = response.iter_lines()
        comments = [line for line in (next(lines) for _ in range(12)) if line.startswith(":")]
    set_status(settings, job_id, JobStatus.cancelled)

    assert len(comments) >= 2, "expected `: ping` comments on an idle stream"


def test_many_streams_share_one_database_read_per_poll(
    served: tuple[ServedApp, Any], auth: dict[str, str], new_job: Callable[[], str], stream_settings: Settings
) -> None:
    server, app = served
    feed = app.state.event_feed
    job_ids = [new_job() for _ in range(3)]
    for job_id in job_ids:
        set_status(stream_settings, job_id, JobStatus.running, "Fine-tuning job started")
    checkouts: list[int] = []
    engine = _read_engine(stream_settings.database_url)
    test_thread = threading.get_ident()

    def count_checkout(*_: Any) -> None:
        if threading.get_ident() != test_thread:  # the test's own writes share the engine on SQLite
            checkouts.append(1)

    with _open_streams(server.base_url, job_ids * 10, auth) as streams:
        for stream in streams:
            stream.messages_through("Fine-tuning job started")  # history read; each stream is now on the feed
        wait_for(lambda: feed.subscriber_count == 30, timeout=10, what="30 subscribed streams")
        sqlalchemy_event.listen(engine.pool, "checkout", count_checkout)
        try:
            polls_before = feed.polls
            for job_id in job_ids:
                write_event(stream_settings, job_id, "Step 1/1")
            for stream in streams:
                assert stream.messages(1) == ["Step 1/1"]
            polls = feed.polls - polls_before
        finally:
            sqlalchemy_event.remove(engine.pool, "checkout", count_checkout)
        for job_id in job_ids:
            set_status(stream_settings, job_id, JobStatus.cancelled)
        for stream in streams:
            assert stream.done.wait(10)

    assert 1 <= polls < 30
    assert len(checkouts) <= polls + 1  # the feed's reads (and one in flight), not one per stream


@contextmanager
def _open_streams(base_url: str, job_ids: list[str], headers: dict[str, str]) -> Iterator[list[StreamReader]]:
    with ExitStack() as stack:
        yield [stack.enter_context(open_stream(base_url, job_id, headers)) for job_id in job_ids]
