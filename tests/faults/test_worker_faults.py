"""Faults injected for real into running workers (SIGKILL, a kill mid-checkpoint, a full disk, a
restarted broker), and what survives: every job ends in the state that matches what happened,
and a resumed job ends with the model an uninterrupted run would have produced."""

from __future__ import annotations

import os
import signal
import subprocess
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load

from models.settings import Settings
from models.storage.database import session_scope
from models.storage.tables import Job, utc_now
from tests.processes import REPO_ROOT, running_worker, training_processes, wait_for

pytestmark = pytest.mark.fault

INJECTED = str(REPO_ROOT / "tests" / "faults" / "injected")
SEED = 1234


def inject(fault: str) -> dict[str, str]:
    """Environment for a worker whose training processes suffer `fault` (see injected/sitecustomize.py)."""
    return {"GRAFT_TEST_FAULT": fault, "PYTHONPATH": f"{INJECTED}{os.pathsep}{REPO_ROOT}"}


def create_job(
    client: TestClient, auth: dict[str, str], model: str, files: tuple[str, str], **hyperparameters: Any
) -> str:
    response = client.post(
        "/v1/fine_tuning/jobs",
        headers=auth,
        json={
            "model": model,
            "training_file": files[0],
            "validation_file": files[1],
            "seed": SEED,
            "strategy": {"type": "full"},
            "hyperparameters": {"batch_size": 4, **hyperparameters},
        },
    )
    assert response.status_code == 200, response.text
    job_id: str = response.json()["id"]
    return job_id


def job_of(client: TestClient, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth).json()
    return body


def events_of(client: TestClient, auth: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    """Every event of the job, oldest first (the API pages newest first)."""
    events: list[dict[str, Any]] = []
    query = "limit=100"
    while True:
        page = client.get(f"/v1/fine_tuning/jobs/{job_id}/events?{query}", headers=auth).json()
        events.extend(page["data"])
        if not page["has_more"]:
            return list(reversed(events))
        query = f"limit=100&after={events[-1]['id']}"


def wait_for_status(client: TestClient, auth: dict[str, str], job_id: str, status: str, timeout: float = 120) -> Any:
    return wait_for(
        lambda: (job := job_of(client, auth, job_id))["status"] == status and job,
        timeout=timeout,
        interval=0.1,
        what=f"job {job_id} to be {status}",
    )


def fine_tuned_weights(client: TestClient, auth: dict[str, str], job_id: str) -> dict[str, torch.Tensor]:
    response = client.get(f"/v1/fine_tuning/jobs/{job_id}/weights", headers=auth)
    assert response.status_code == 200, response.text
    with tarfile.open(fileobj=BytesIO(response.content)) as archive:
        member = archive.extractfile("model.safetensors")
        assert member is not None
        return load(member.read())


def assert_same_model(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.allclose(tensor, second[name], atol=1e-5), name


def last_validation(events: list[dict[str, Any]]) -> dict[str, float]:
    return [e["data"] for e in events if e["message"].startswith("Epoch ")][-1]


def resumed_from(events: list[dict[str, Any]]) -> int:
    [step] = [e["data"]["resumed_from_step"] for e in events if e["message"].startswith("Resumed from the checkpoint")]
    return int(step)


def owner_pid(settings: Settings, job_id: str) -> int:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.lease_owner is not None
        return int(job.lease_owner.split(":")[-2])  # host:pid:token


def uninterrupted_reference(
    client: TestClient, auth: dict[str, str], model: str, files: tuple[str, str], **hyperparameters: Any
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The same job run without a fault (a worker must be running)."""
    job_id = create_job(client, auth, model, files, **hyperparameters)
    wait_for_status(client, auth, job_id, "succeeded")
    return fine_tuned_weights(client, auth, job_id), last_validation(events_of(client, auth, job_id))


def test_a_worker_killed_mid_epoch_loses_at_most_one_checkpoint_interval_and_the_result_matches_an_uninterrupted_run(
    client: TestClient, auth: dict[str, str], tiny_bert: str, settings: Settings, files: tuple[str, str], tmp_path: Path
) -> None:
    faulty = settings.model_copy(update={"lease_seconds": 6, "checkpoint_interval_seconds": 0.01})
    job_id = create_job(client, auth, tiny_bert, files, n_epochs=3)
    with running_worker(faulty, tmp_path / "a.log"), running_worker(faulty, tmp_path / "b.log"):
        wait_for(
            lambda: any((e["data"] or {}).get("kind") == "interval" for e in events_of(client, auth, job_id)),
            timeout=90,
            what="a mid-epoch checkpoint",
        )
        os.kill(owner_pid(settings, job_id), signal.SIGKILL)
        finished = wait_for_status(client, auth, job_id, "succeeded")
        reference_weights, reference_validation = uninterrupted_reference(client, auth, tiny_bert, files, n_epochs=3)

    events = events_of(client, auth, job_id)
    assert (finished["attempt"], finished["status"]) == (2, "succeeded")
    lost = next(i for i, e in enumerate(events) if e["message"].startswith("Worker of attempt 1 lost"))
    first_run_checkpoints = [e["data"]["step"] for e in events[:lost] if e["message"].startswith("Checkpoint saved")]
    step = resumed_from(events)
    assert step > 0
    assert step == max(first_run_checkpoints)  # the newest complete checkpoint of the killed run
    assert any(e["message"] == f"Resumed from the checkpoint at step {step}" for e in events)
    assert_same_model(fine_tuned_weights(client, auth, job_id), reference_weights)
    assert last_validation(events) == pytest.approx(reference_validation)


def test_a_worker_killed_while_writing_a_checkpoint_resumes_from_the_previous_complete_one(
    client: TestClient, auth: dict[str, str], tiny_bert: str, settings: Settings, files: tuple[str, str], tmp_path: Path
) -> None:
    faulty = settings.model_copy(update={"lease_seconds": 6})
    job_id = create_job(client, auth, tiny_bert, files, n_epochs=3)  # 96 rows / batch 4: 24 steps an epoch
    with running_worker(faulty, tmp_path / "dies.log", inject("kill_worker_during_checkpoint:2")) as dying:
        assert dying.wait(timeout=90) == -signal.SIGKILL
    assert not training_processes(job_id)
    half_written = [folder for folder in (settings.artifacts / ".tmp").iterdir() if (folder / "optimizer.pt").exists()]
    assert half_written and not any((folder / "COMPLETE").exists() for folder in half_written)

    with running_worker(faulty, tmp_path / "takes-over.log"):
        wait_for_status(client, auth, job_id, "succeeded")
        reference_weights, _ = uninterrupted_reference(client, auth, tiny_bert, files, n_epochs=3)
    events = events_of(client, auth, job_id)
    assert resumed_from(events) == 24  # the end of epoch 1; the half-written step-48 checkpoint was never used
    assert job_of(client, auth, job_id)["attempt"] == 2
    assert_same_model(fine_tuned_weights(client, auth, job_id), reference_weights)


def test_a_job_that_kills_its_worker_every_time_fails_after_the_allowed_losses(
    client: TestClient, auth: dict[str, str], tiny_bert: str, settings: Settings, files: tuple[str, str], tmp_path: Path
) -> None:
    poisoned = settings.model_copy(update={"lease_seconds": 6, "max_attempts": 2})
    job_id = create_job(client, auth, tiny_bert, files, n_epochs=1)
    for run in (1, 2):
        with running_worker(poisoned, tmp_path / f"run-{run}.log", inject("kill_worker_at_step:2")) as worker:
            assert worker.wait(timeout=90) == -signal.SIGKILL
        assert job_of(client, auth, job_id)["attempt"] == run
        wait_for(lambda: job_is_expired(settings, job_id), timeout=30, what="the dead run's lease to expire")
    with running_worker(poisoned, tmp_path / "sweeps.log"):
        failed = wait_for_status(client, auth, job_id, "failed", timeout=30)  # noqa: F841
    assert failed["attempt"] == 2
    assert failed["error"]["code"] == "worker_crashed"
    assert "lost 2 times" in failed["error"]["message"]
    started = [e for e in events_of(client, auth, job_id) if e["message"].startswith("Fine-tuning job started")]
    assert len(started) == 2


def job_is_expired(settings: Settings, job_id: str) -> bool:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.lease_expires_at is not None and job.lease_expires_at < utc_now()


def test_a_full_disk_while_saving_the_model_fails_the_job_clearly_and_publishes_no_weights(
    client: TestClient, auth: dict[str, str], tiny_bert: str, settings: Settings, files: tuple[str, str], tmp_path: Path
) -> None:
    job_id = create_job(client, auth, tiny_bert, files, n_epochs=1)
    with running_worker(settings, tmp_path / "worker.log", inject("disk_full_on_export")):
        failed = wait_for_status(client, auth, job_id, "failed")
    assert failed["error"]["code"] == "artifact_write_failed"
    assert "No space left on device" in failed["error"]["message"]
    assert failed["fine_tuned_model"] is None
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}/weights", headers=auth).status_code in (404, 409)
    assert not (settings.artifacts / "jobs" / job_id / "attempt-1").exists()
    assert not list((settings.artifacts / ".tmp").iterdir())  # the half-written archive is gone too


def test_pause_checkpoints_a_running_job_and_frees_its_worker_and_resume_ends_as_an_uninterrupted_run(
    client: TestClient, auth: dict[str, str], tiny_bert: str, settings: Settings, files: tuple[str, str], tmp_path: Path
) -> None:
    job_id = create_job(client, auth, tiny_bert, files, n_epochs=30)
    with running_worker(settings, tmp_path / "worker.log"):
        wait_for(lambda: (job_of(client, auth, job_id).get("progress") or {}).get("step", 0) > 0, timeout=90)
        response = client.post(f"/v1/fine_tuning/jobs/{job_id}/pause", headers=auth)
        assert response.status_code == 200, response.text
        paused = wait_for_status(client, auth, job_id, "paused", timeout=15)
        assert not training_processes(job_id)
        [pause_event] = [e for e in events_of(client, auth, job_id) if e["message"].startswith("Job paused at step")]
        paused_at = pause_event["data"]["step"]
        assert 0 < paused_at < 30 * 24 and paused["status"] == "paused"

        resumed = client.post(f"/v1/fine_tuning/jobs/{job_id}/resume", headers=auth)
        assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
        wait_for_status(client, auth, job_id, "succeeded")
        reference_weights, reference_validation = uninterrupted_reference(client, auth, tiny_bert, files, n_epochs=30)
    events = events_of(client, auth, job_id)
    assert resumed_from(events) == paused_at
    assert_same_model(fine_tuned_weights(client, auth, job_id), reference_weights)
    assert last_validation(events) == pytest.approx(reference_validation)


def test_a_cancelled_running_job_frees_its_process_within_seconds_and_keeps_nothing(
    client: TestClient, auth: dict[str, str], tiny_bert: str, settings: Settings, files: tuple[str, str], tmp_path: Path
) -> None:
    job_id = create_job(client, auth, tiny_bert, files, n_epochs=50)
    with running_worker(settings, tmp_path / "worker.log"):
        wait_for(
            lambda: client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints", headers=auth).json()["data"],
            timeout=90,
            what="a first checkpoint",
        )
        assert training_processes(job_id)
        assert client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=auth).json()["status"] == "cancelled"
        wait_for(lambda: not training_processes(job_id), timeout=2 * settings.heartbeat_seconds + 2, what="exit")
        checkpoints = settings.artifacts / "jobs" / job_id / "checkpoints"
        wait_for(lambda: not checkpoints.exists(), timeout=10, what="the cancelled job's checkpoints to go")
    job = job_of(client, auth, job_id)
    assert (job["status"], job["fine_tuned_model"]) == ("cancelled", None)
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}/weights", headers=auth).status_code in (404, 409)
    assert not (settings.artifacts / "jobs" / job_id / "attempt-1").exists()


def test_sigterm_during_training_is_a_clean_stop_not_a_crash(
    client: TestClient, auth: dict[str, str], tiny_bert: str, settings: Settings, files: tuple[str, str], tmp_path: Path
) -> None:
    job_id = create_job(client, auth, tiny_bert, files, n_epochs=50)
    with running_worker(settings, tmp_path / "worker.log") as worker:
        wait_for(lambda: (job_of(client, auth, job_id).get("progress") or {}).get("step", 0) > 0, timeout=90)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    job = job_of(client, auth, job_id)
    assert job["status"] == "queued" and job["error"] is None
    assert isinstance(worker, subprocess.Popen)
