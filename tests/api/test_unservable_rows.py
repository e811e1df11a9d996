"""Stored rows no response can carry as they are: lists still answer, and a change is never answered with a 500.

The rows are damaged in the database directly, as an older version, a manual repair or another
writer could leave them: JSON holding "\\ud800" (a lone surrogate once decoded, which UTF-8 cannot
encode), or a JSON column lacking a field the API shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from models.ids import IdPrefix, new_id
from models.services import events, runs
from models.settings import Settings
from models.storage.database import session_scope
from models.storage.tables import Checkpoint, Job, JobEvent

LONE = "\ud800"
REPLACED = "\ufffd"


def damage(settings: Settings, job_id: str, **values: Any) -> None:
    with session_scope(settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def listed_ids(client: TestClient, auth: dict[str, str], query: str = "") -> list[str]:
    response = client.get(f"/v1/fine_tuning/jobs{query}", headers=auth)
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["data"]]


def test_jobs_list_serves_rows_holding_lone_surrogates_with_them_replaced(
    client: TestClient, auth: dict[str, str], settings: Settings, new_job: Callable[[], str]
) -> None:
    good, bad = new_job(), new_job()
    damage(
        settings, bad, user_metadata={"team": f"ml{LONE}", f"k{LONE}": "v"}, task_settings={"labels": [f"a{LONE}", "b"]}
    )
    response = client.get("/v1/fine_tuning/jobs", headers=auth)
    assert response.status_code == 200
    served = {job["id"]: job for job in response.json()["data"]}
    assert set(served) == {good, bad}
    assert served[bad]["metadata"] == {"team": f"ml{REPLACED}", f"k{REPLACED}": "v"}
    assert served[bad]["labels"] == [f"a{REPLACED}", "b"]


def test_jobs_list_leaves_out_a_row_that_cannot_be_built_and_logs_why(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    new_job: Callable[[], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    older, bad, newer = new_job(), new_job(), new_job()
    damage(settings, bad, hyperparameters={"n_epochs": 3})  # the other six fields are missing
    with caplog.at_level(logging.ERROR, logger="models.services.job_views"):
        assert listed_ids(client, auth) == [newer, older]
    assert [record.getMessage().split(":")[0] for record in caplog.records] == [f"Job {bad} cannot be shown"]


def test_a_page_is_filled_from_the_rows_after_the_ones_that_cannot_be_built(
    client: TestClient, auth: dict[str, str], settings: Settings, new_job: Callable[[], str]
) -> None:
    oldest, older, bad_one, bad_two = new_job(), new_job(), new_job(), new_job()
    damage(settings, bad_one, status="no-such-status")
    damage(settings, bad_two, strategy={"type": "no-such-strategy"})
    page = client.get("/v1/fine_tuning/jobs?limit=1", headers=auth).json()
    assert ([job["id"] for job in page["data"]], page["has_more"]) == ([older], True)
    rest = client.get(f"/v1/fine_tuning/jobs?limit=5&after={older}", headers=auth).json()
    assert ([job["id"] for job in rest["data"]], rest["has_more"]) == ([oldest], False)


def test_job_get_serves_a_row_holding_lone_surrogates_with_them_replaced(
    client: TestClient, auth: dict[str, str], settings: Settings, new_job: Callable[[], str]
) -> None:
    job_id = new_job()
    damage(settings, job_id, user_metadata={"team": f"ml{LONE}"}, result_files=[f"file-{LONE}"])
    response = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth)
    assert response.status_code == 200
    assert response.json()["metadata"] == {"team": f"ml{REPLACED}"}
    assert response.json()["result_files"] == [f"file-{REPLACED}"]
    assert response.json() == client.get("/v1/fine_tuning/jobs", headers=auth).json()["data"][0]


def test_job_get_of_a_row_that_cannot_be_built_names_the_job_and_the_remedy(
    client: TestClient, auth: dict[str, str], settings: Settings, new_job: Callable[[], str]
) -> None:
    job_id = new_job()
    damage(settings, job_id, hyperparameters={"n_epochs": 3})
    response = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth)
    assert response.status_code == 500
    assert response.json()["error"] == {
        "message": f"Job {job_id} cannot be shown: its stored record is damaged. Ask the server's administrator "
        "to repair it; the server's log says which field is at fault.",
        "type": "server_error",
        "param": None,
        "code": "internal_error",
    }


@pytest.mark.parametrize(("action", "status"), [("cancel", "cancelled"), ("pause", "paused")])
def test_a_change_to_a_row_holding_lone_surrogates_is_committed_and_answered(
    client: TestClient, auth: dict[str, str], settings: Settings, new_job: Callable[[], str], action: str, status: str
) -> None:
    job_id = new_job()
    damage(settings, job_id, user_metadata={"team": f"ml{LONE}"})
    response = client.post(f"/v1/fine_tuning/jobs/{job_id}/{action}", headers=auth)
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["metadata"]) == (status, {"team": f"ml{REPLACED}"})
    if action == "pause":
        resumed = client.post(f"/v1/fine_tuning/jobs/{job_id}/resume", headers=auth)
        assert (resumed.status_code, resumed.json()["status"]) == (200, "queued")


@pytest.mark.parametrize("action", ["cancel", "pause"])
def test_a_change_to_a_row_that_cannot_be_built_is_refused_before_it_is_committed(
    client: TestClient, auth: dict[str, str], settings: Settings, new_job: Callable[[], str], action: str
) -> None:
    """The response is built before the commit: a row it cannot be built from fails the request whole."""
    job_id = new_job()
    damage(settings, job_id, hyperparameters={"n_epochs": 3})
    response = client.post(f"/v1/fine_tuning/jobs/{job_id}/{action}", headers=auth)
    assert (response.status_code, response.json()["error"]["code"]) == (500, "internal_error")
    with session_scope(settings.database_url) as session:
        assert session.get_one(Job, job_id).status == "queued"
        assert [e.message for e in session.query(JobEvent).filter(JobEvent.job_id == job_id)][-1] == "Job queued"


def test_events_list_serves_damaged_events_replaced_or_left_out(
    client: TestClient, auth: dict[str, str], settings: Settings, new_job: Callable[[], str]
) -> None:
    job_id = new_job()
    with session_scope(settings.database_url) as session:
        events.append_event(session, job_id, "Odd data", data={"note": f"x{LONE}"})
        broken = events.append_event(session, job_id, "Unknown level")
        broken.level = "loud"
    response = client.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=2", headers=auth)
    assert response.status_code == 200
    page = response.json()
    assert [(event["message"], event["data"]) for event in page["data"]] == [
        ("Odd data", {"note": f"x{REPLACED}"}),
        ("Job queued", None),
    ]
    assert page["has_more"] is True


def test_checkpoints_list_serves_damaged_checkpoints_replaced_or_left_out(
    client: TestClient, auth: dict[str, str], settings: Settings, new_job: Callable[[], str]
) -> None:
    job_id = new_job()
    with session_scope(settings.database_url) as session:
        for step, metrics in [(10, {f"accuracy{LONE}": 0.5}), (20, {"accuracy": "high"}), (5, {"accuracy": 0.4})]:
            session.add(
                Checkpoint(
                    id=new_id(IdPrefix.checkpoint),
                    job_id=job_id,
                    attempt=1,
                    step=step,
                    epoch=1,
                    metrics=metrics,
                    blob_key=f"checkpoints/{job_id}/{step}",
                )
            )
    response = client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints", headers=auth)
    assert response.status_code == 200
    assert [(c["step_number"], c["metrics"]) for c in response.json()["data"]] == [
        (10, {f"accuracy{REPLACED}": 0.5}),
        (5, {"accuracy": 0.4}),
    ]


def test_a_pause_of_a_running_job_whose_row_holds_lone_surrogates_is_answered(
    client: TestClient, auth: dict[str, str], settings: Settings, new_job: Callable[[], str]
) -> None:
    job_id = new_job()
    damage(settings, job_id, task_settings={"labels": [f"a{LONE}", "b"]})
    with session_scope(settings.database_url) as session:
        assert runs.claim_job(session, job_id, owner="test:1", lease_seconds=30) == 1
    assert client.post(f"/v1/fine_tuning/jobs/{job_id}/pause", headers=auth).json()["labels"] == [f"a{REPLACED}", "b"]
