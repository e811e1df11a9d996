"""Pause and resume in every state (OpenAI's POST /pause and /resume), without a worker."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.main import create_app
from models.services import events, runs
from models.settings import Settings
from models.storage.database import session_scope
from models.storage.tables import Job, JobEvent, Tenant, utc_now
from tests.conftest import jsonl_bytes, upload_file

ROWS = [{"text": f"t{i}", "label": "a" if i % 2 else "b"} for i in range(8)]


@pytest.fixture
def job_id(client: TestClient, auth: dict[str, str], minilm: str) -> str:
    file_id = upload_file(client, auth, jsonl_bytes(ROWS))
    response = client.post("/v1/fine_tuning/jobs", headers=auth, json={"training_file": file_id})
    assert response.status_code == 200, response.text
    created: str = response.json()["id"]
    return created


def post(client: TestClient, auth: dict[str, str], job_id: str, action: str) -> Any:
    return client.post(f"/v1/fine_tuning/jobs/{job_id}/{action}", headers=auth)


def events_of(client: TestClient, auth: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    page = client.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=1000", headers=auth).json()
    data: list[dict[str, Any]] = page["data"]
    return data


def claim(settings: Settings, job_id: str) -> int:
    with session_scope(settings.database_url) as session:
        attempt = runs.claim_job(session, job_id, owner="test:1", lease_seconds=30)
    assert attempt is not None
    return attempt


def test_a_queued_job_pauses_at_once_and_resume_queues_it_again(
    client: TestClient, auth: dict[str, str], job_id: str
) -> None:
    assert post(client, auth, job_id, "pause").json()["status"] == "paused"
    assert post(client, auth, job_id, "pause").json()["status"] == "paused"  # pausing twice changes nothing
    assert post(client, auth, job_id, "resume").json()["status"] == "queued"
    messages = [e["message"] for e in client.get(f"/v1/fine_tuning/jobs/{job_id}/events", headers=auth).json()["data"]]
    assert messages[:2] == ["Job resumed and queued", "Job paused; resume it to queue it again"]


def test_a_running_job_is_asked_to_pause_and_its_run_sees_the_request(
    client: TestClient, auth: dict[str, str], job_id: str, settings: Settings
) -> None:
    attempt = claim(settings, job_id)
    response = post(client, auth, job_id, "pause")
    assert response.status_code == 200 and response.json()["status"] == "running"
    with session_scope(settings.database_url) as session:
        assert runs.renew_lease(session, job_id, attempt, lease_seconds=30) is runs.LeaseState.pause_requested
        assert runs.pause_run(session, job_id, attempt, step=7)
    job = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth).json()
    assert job["status"] == "paused"
    events = client.get(f"/v1/fine_tuning/jobs/{job_id}/events", headers=auth).json()["data"]
    assert events[0]["message"] == "Job paused at step 7; resume it to continue from there"


def test_resuming_a_running_job_withdraws_its_pause_request(
    client: TestClient, auth: dict[str, str], job_id: str, settings: Settings
) -> None:
    attempt = claim(settings, job_id)
    post(client, auth, job_id, "pause")
    assert post(client, auth, job_id, "resume").json()["status"] == "running"
    with session_scope(settings.database_url) as session:
        assert runs.renew_lease(session, job_id, attempt, lease_seconds=30) is runs.LeaseState.held


def test_resume_of_a_job_that_is_not_paused_is_409(client: TestClient, auth: dict[str, str], job_id: str) -> None:
    response = post(client, auth, job_id, "resume")
    assert response.status_code == 409
    assert response.json()["error"] == {
        "message": f"Job {job_id} is queued, not paused; it starts by itself when a worker is free, so there is "
        "nothing to resume.",
        "type": "invalid_request_error",
        "param": "fine_tuning_job_id",
        "code": "invalid_state",
    }


@pytest.mark.parametrize("end", ["cancel", "fail"])
def test_a_job_that_ended_can_be_neither_paused_nor_resumed(
    client: TestClient, auth: dict[str, str], job_id: str, settings: Settings, end: str
) -> None:
    if end == "cancel":
        post(client, auth, job_id, "cancel")
    else:
        with session_scope(settings.database_url) as session:
            runs.fail_job(session, job_id, None, runs.JobFailure("internal_error", "boom"))
    assert post(client, auth, job_id, "pause").status_code == 409
    assert post(client, auth, job_id, "resume").status_code == 409


def test_a_paused_job_can_be_cancelled(client: TestClient, auth: dict[str, str], job_id: str) -> None:
    post(client, auth, job_id, "pause")
    assert post(client, auth, job_id, "cancel").json()["status"] == "cancelled"


def test_a_paused_job_does_not_hold_a_job_slot_but_resuming_needs_one(
    client: TestClient, auth: dict[str, str], job_id: str, settings: Settings
) -> None:
    post(client, auth, job_id, "pause")
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        tenant = session.get(Tenant, job.tenant_id)
        assert tenant is not None
        tenant.max_active_jobs = 1
    file_id = upload_file(client, auth, jsonl_bytes(ROWS))
    assert client.post("/v1/fine_tuning/jobs", headers=auth, json={"training_file": file_id}).status_code == 200
    response = post(client, auth, job_id, "resume")
    assert response.status_code == 429
    assert response.json()["error"]["param"] == "max_active_jobs"
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth).json()["status"] == "paused"


def test_another_tenants_job_cannot_be_paused_or_resumed(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], job_id: str
) -> None:
    assert post(client, other_auth, job_id, "pause").status_code == 404
    assert post(client, other_auth, job_id, "resume").status_code == 404


def test_resuming_a_running_job_with_no_pause_requested_is_409(
    client: TestClient, auth: dict[str, str], job_id: str, settings: Settings
) -> None:
    claim(settings, job_id)
    response = post(client, auth, job_id, "resume")
    assert response.status_code == 409
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (
        "invalid_state",
        "fine_tuning_job_id",
    )
    assert response.json()["error"]["message"] == (
        f"Job {job_id} is running, not paused, and no pause is pending; there is nothing to resume."
    )


def test_a_second_pause_while_one_is_pending_answers_the_job_and_writes_nothing(
    client: TestClient, auth: dict[str, str], job_id: str, settings: Settings
) -> None:
    attempt = claim(settings, job_id)
    assert post(client, auth, job_id, "pause").json()["status"] == "running"
    logged = events_of(client, auth, job_id)
    again = post(client, auth, job_id, "pause")
    assert (again.status_code, again.json()["status"]) == (200, "running")
    assert events_of(client, auth, job_id) == logged
    with session_scope(settings.database_url) as session:
        assert runs.pause_run(session, job_id, attempt, step=7)
    logged = events_of(client, auth, job_id)
    once_paused = post(client, auth, job_id, "pause")
    assert (once_paused.status_code, once_paused.json()["status"]) == (200, "paused")
    assert events_of(client, auth, job_id) == logged


def test_a_pause_of_a_job_that_ended_says_so_in_plain_words(
    client: TestClient, auth: dict[str, str], job_id: str
) -> None:
    post(client, auth, job_id, "cancel")
    response = post(client, auth, job_id, "pause")
    assert response.status_code == 409
    assert response.json()["error"] == {
        "message": f"Job {job_id} already ended (cancelled), so it cannot be paused; only a queued or running job "
        "can be.",
        "type": "invalid_request_error",
        "param": "fine_tuning_job_id",
        "code": "invalid_state",
    }
    resumed = post(client, auth, job_id, "resume")
    assert (resumed.status_code, resumed.json()["error"]["code"]) == (409, "invalid_state")
    assert resumed.json()["error"]["message"] == (
        f"Job {job_id} already ended (cancelled), so it cannot be resumed; only a paused job can be. "
        "Create a new job to train again."
    )


def test_a_pause_request_names_the_step_the_run_had_reached(
    client: TestClient, auth: dict[str, str], job_id: str, settings: Settings
) -> None:
    attempt = claim(settings, job_id)
    with session_scope(settings.database_url) as session:
        runs.record_progress(
            session, job_id, attempt, progress={"step": 173, "total_steps": 189, "epoch": 2, "percent": 91.5}
        )
    post(client, auth, job_id, "pause")
    newest = events_of(client, auth, job_id)[0]
    assert newest["message"] == (
        "Pause requested at step 173 of 189: the run will checkpoint after its current step and stop"
    )
    assert newest["data"] == {"control": "pause", "step": 173, "total_steps": 189}


def test_a_pause_that_arrives_as_the_run_finishes_is_reported_and_the_job_succeeds(
    client: TestClient, auth: dict[str, str], job_id: str, settings: Settings
) -> None:
    attempt = claim(settings, job_id)
    with session_scope(settings.database_url) as session:
        runs.record_progress(
            session, job_id, attempt, progress={"step": 173, "total_steps": 189, "epoch": 2, "percent": 91.5}
        )
    assert post(client, auth, job_id, "pause").json()["status"] == "running"
    with session_scope(settings.database_url) as session:
        assert runs.complete_job(session, job_id, attempt, trained_tokens=10) is not None
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth).json()["status"] == "succeeded"
    [dropped] = [e for e in events_of(client, auth, job_id) if e["level"] == "warn"]
    assert dropped["message"] == (
        "The pause requested at step 173 arrived as the run was finishing its last steps, so the job completed "
        "instead of pausing"
    )
    assert dropped["data"] == {"pause_requested_at_step": 173}


CONTROL_LIMIT = 4
# Four control events that leave a running job running, with no pause pending.
FOUR_CONTROLS = ("pause", "resume", "pause", "resume")


@pytest.fixture
def limited_client(settings: Settings) -> Iterator[TestClient]:
    """The API with job_control_events_per_minute lowered to CONTROL_LIMIT."""
    limited = settings.model_copy(update={"job_control_events_per_minute": CONTROL_LIMIT})
    with TestClient(create_app(limited)) as test_client:
        yield test_client


def control_events(settings: Settings, job_id: str) -> list[JobEvent]:
    with session_scope(settings.database_url) as session:
        rows = session.query(JobEvent).filter(JobEvent.job_id == job_id).order_by(JobEvent.sequence).all()
        return [row for row in rows if (row.data or {}).get("control")]


@pytest.mark.parametrize("refused", ["pause", "resume"])
def test_control_requests_beyond_the_per_minute_limit_are_429_and_write_nothing(
    limited_client: TestClient, auth: dict[str, str], job_id: str, settings: Settings, refused: str
) -> None:
    claim(settings, job_id)
    for action in FOUR_CONTROLS:
        assert post(limited_client, auth, job_id, action).status_code == 200
    if refused == "resume":  # a pending pause written by no request, so that a resume would change something
        with session_scope(settings.database_url) as session:
            session.execute(update(Job).where(Job.id == job_id).values(pause_requested_at=utc_now()))
    before = events_of(limited_client, auth, job_id)
    response = post(limited_client, auth, job_id, refused)
    assert response.status_code == 429
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (
        "quota_exceeded",
        "job_control_events_per_minute",
        "rate_limit_error",
    )
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert error["message"] == (
        f"Job {job_id} took {CONTROL_LIMIT} pause and resume requests in the last minute, the most allowed "
        f"(job_control_events_per_minute={CONTROL_LIMIT}); retry in {retry_after} seconds (cancelling is always "
        "allowed)."
    )
    assert events_of(limited_client, auth, job_id) == before
    job = limited_client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth).json()
    assert job["status"] == "running"
    with session_scope(settings.database_url) as session:
        assert runs.pause_is_requested(session, job_id) == (refused == "resume")


def test_a_job_can_always_be_cancelled_even_at_the_control_limit(
    limited_client: TestClient, auth: dict[str, str], job_id: str, settings: Settings
) -> None:
    claim(settings, job_id)
    for action in FOUR_CONTROLS:
        assert post(limited_client, auth, job_id, action).status_code == 200
    assert post(limited_client, auth, job_id, "pause").status_code == 429
    response = post(limited_client, auth, job_id, "cancel")
    assert (response.status_code, response.json()["status"]) == (200, "cancelled")
    assert [event.data["control"] for event in control_events(settings, job_id)] == [*FOUR_CONTROLS, "cancel"]


def test_requests_that_would_change_nothing_are_answered_as_usual_at_the_control_limit(
    limited_client: TestClient, auth: dict[str, str], job_id: str, settings: Settings
) -> None:
    """A repeated pause writes nothing, and a request on a job that ended is a 409: neither is a 429."""
    claim(settings, job_id)
    for action in FOUR_CONTROLS[:3]:
        assert post(limited_client, auth, job_id, action).status_code == 200
    with session_scope(settings.database_url) as session:  # a fourth control event fills the window
        events.append_control_event(session, job_id, events.JobControl.resume, "Pause request withdrawn")
    again = post(limited_client, auth, job_id, "pause")
    assert (again.status_code, again.json()["status"]) == (200, "running")
    assert post(limited_client, auth, job_id, "resume").status_code == 429  # it would withdraw the pending pause
    with session_scope(settings.database_url) as session:
        runs.fail_job(session, job_id, None, runs.JobFailure("internal_error", "The worker hit an internal error."))
    for action in ("pause", "resume", "cancel"):
        response = post(limited_client, auth, job_id, action)
        assert (response.status_code, response.json()["error"]["code"]) == (409, "invalid_state")
    assert len(control_events(settings, job_id)) == CONTROL_LIMIT


def test_the_control_limit_frees_as_requests_leave_the_minute(
    limited_client: TestClient, auth: dict[str, str], job_id: str, settings: Settings
) -> None:
    claim(settings, job_id)
    for action in FOUR_CONTROLS:
        assert post(limited_client, auth, job_id, action).status_code == 200
    oldest = control_events(settings, job_id)[0]
    with session_scope(settings.database_url) as session:
        session.execute(
            update(JobEvent).where(JobEvent.id == oldest.id).values(created_at=utc_now() - timedelta(seconds=45))
        )
    refused = post(limited_client, auth, job_id, "pause")
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) in (14, 15)  # the oldest leaves the window 15 s from now
    with session_scope(settings.database_url) as session:
        session.execute(
            update(JobEvent).where(JobEvent.id == oldest.id).values(created_at=utc_now() - timedelta(seconds=61))
        )
    assert post(limited_client, auth, job_id, "pause").status_code == 200
    assert len(control_events(settings, job_id)) == CONTROL_LIMIT + 1
