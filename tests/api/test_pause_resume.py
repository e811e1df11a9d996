"""Pause and resume in every state (OpenAI's POST /pause and /resume), without a worker."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from models import jobs
from models.db import session_scope
from models.settings import Settings
from models.tables import Job, Tenant
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


def claim(settings: Settings, job_id: str) -> int:
    with session_scope(settings.database_url) as session:
        attempt = jobs.claim_job(session, job_id, owner="test:1", lease_seconds=30)
    assert attempt is not None
    return attempt


def test_a_queued_job_pauses_at_once_and_resume_queues_it_again(
    client: TestClient, auth: dict[str, str], job_id: str
) -> None:
    assert post(client, auth, job_id, "pause").json()["status"] == "paused"
    assert post(client, auth, job_id, "pause").json()["status"] == "paused"  # pausing twice changes nothing
    assert post(client, auth, job_id, "resume").json()["status"] == "queued"
    messages = [e["message"] for e in client.get(f"/v1/fine_tuning/jobs/{job_id}/events", headers=auth).json()["data"]]
    assert messages[:2] == ["Job resumed and queued", "Job paused"]


def test_a_running_job_is_asked_to_pause_and_its_run_sees_the_request(
    client: TestClient, auth: dict[str, str], job_id: str, settings: Settings
) -> None:
    attempt = claim(settings, job_id)
    response = post(client, auth, job_id, "pause")
    assert response.status_code == 200 and response.json()["status"] == "running"
    with session_scope(settings.database_url) as session:
        assert jobs.renew_lease(session, job_id, attempt, lease_seconds=30) is jobs.LeaseState.pause_requested
        assert jobs.pause_run(session, job_id, attempt, step=7)
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
        assert jobs.renew_lease(session, job_id, attempt, lease_seconds=30) is jobs.LeaseState.held


def test_resume_of_a_job_that_is_not_paused_is_409(client: TestClient, auth: dict[str, str], job_id: str) -> None:
    response = post(client, auth, job_id, "resume")
    assert response.status_code == 409
    assert response.json()["error"]["message"] == f"Job {job_id} is queued, not paused; it cannot be resumed"


@pytest.mark.parametrize("end", ["cancel", "fail"])
def test_a_job_that_ended_can_be_neither_paused_nor_resumed(
    client: TestClient, auth: dict[str, str], job_id: str, settings: Settings, end: str
) -> None:
    if end == "cancel":
        post(client, auth, job_id, "cancel")
    else:
        with session_scope(settings.database_url) as session:
            jobs.fail_job(session, job_id, None, jobs.JobFailure("internal_error", "boom"))
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
    assert "running, not paused" in response.json()["error"]["message"]
