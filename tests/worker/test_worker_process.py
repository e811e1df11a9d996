from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from models.services import catalog, runs
from models.settings import Settings
from models.storage import broker as queue
from models.storage.database import session_scope
from models.storage.tables import Job
from tests.conftest import jsonl_bytes, upload_file
from tests.processes import running_worker, training_processes, wait_for
from tests.webhook_receiver import running_receiver
from tests.worker.training.conftest import sentiment_rows


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with running_worker(settings, tmp_path / "worker.log") as process:
        yield process


def job_of(client: TestClient, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth).json()
    return body


def create_job(client: TestClient, auth: dict[str, str], model: str, **body: Any) -> str:
    training = upload_file(client, auth, jsonl_bytes(sentiment_rows(64)))
    validation = upload_file(client, auth, jsonl_bytes(sentiment_rows(16)))
    response = client.post(
        "/v1/fine_tuning/jobs",
        headers=auth,
        json={"model": model, "training_file": training, "validation_file": validation, **body},
    )
    assert response.status_code == 200, response.text
    job_id: str = response.json()["id"]
    return job_id


def wait_for_status(
    client: TestClient, auth: dict[str, str], job_id: str, status: str, timeout: float
) -> dict[str, Any]:
    return wait_for(
        lambda: (job := job_of(client, auth, job_id))["status"] == status and job,
        timeout=timeout,
        interval=0.2,
        what=f"job {job_id} to be {status}",
    )


def test_worker_trains_a_queued_job_to_succeeded_with_events_checkpoints_and_weights(
    client: TestClient, auth: dict[str, str], tiny_bert: str, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    job_id = create_job(
        client, auth, tiny_bert, hyperparameters={"n_epochs": 2, "batch_size": 16}, suffix="toy", seed=1
    )
    job = wait_for_status(client, auth, job_id, "succeeded", timeout=120)
    assert job["fine_tuned_model"] == f"ft:{tiny_bert}:toy:{job_id}"
    assert job["trained_tokens"] > 0
    assert job["progress"] == {"step": 8, "total_steps": 8, "epoch": 2, "percent": 100.0}
    assert job["attempt"] == 1
    assert 0 < job["trainable_parameters"] == job["total_parameters"]

    checkpoints = client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints", headers=auth).json()["data"]
    assert [c["step_number"] for c in checkpoints] == [8, 4]
    assert checkpoints[0]["fine_tuned_model_checkpoint"] == f"ft:{tiny_bert}:toy:{job_id}:ckpt-step-8"
    assert set(checkpoints[0]["metrics"]) == {"valid_loss", "valid_accuracy", "valid_macro_f1"}

    events = client.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=100", headers=auth).json()["data"]
    metrics = [e for e in events if e["type"] == "metrics" and "train_loss" in (e["data"] or {})]
    assert metrics and {"samples_per_second", "tokens_per_second", "step", "epoch"} <= set(metrics[0]["data"])
    assert any("seconds_to_first_step" in (e["data"] or {}) for e in metrics)
    assert events[0]["message"] == "The job has successfully completed"

    weights = client.get(f"/v1/fine_tuning/jobs/{job_id}/weights", headers=auth)
    assert weights.status_code == 200
    with tarfile.open(fileobj=BytesIO(weights.content)) as archive:
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(archive.getnames())
    [result_file] = job["result_files"]
    results = client.get(f"/v1/files/{result_file}/content", headers=auth).text.splitlines()
    assert results[0] == "step,epoch,train_loss,learning_rate,valid_loss,valid_accuracy,valid_macro_f1"
    assert len(results) == 1 + 8
    assert client.get(f"/v1/files/{result_file}", headers=auth).json()["purpose"] == "fine-tune-results"
    models = [m["id"] for m in client.get("/v1/models", headers=auth).json()["data"]]
    assert job["fine_tuned_model"] in models


def test_a_running_job_shows_its_freeze_plan_and_finish_estimate_and_its_webhook_arrives_signed(
    client: TestClient, auth: dict[str, str], tiny_bert: str, worker: subprocess.Popen[bytes]
) -> None:
    with running_receiver() as receiver:
        secret = client.post(
            "/v1/webhooks", headers=auth, json={"url": receiver.url, "events": ["fine_tuning.job.succeeded"]}
        ).json()["secret"]
        job_id = create_job(
            client, auth, tiny_bert, strategy="partial", hyperparameters={"n_epochs": 15, "batch_size": 4}
        )
        running = wait_for(
            lambda: (job := job_of(client, auth, job_id))["estimated_finish"] and job,
            timeout=120,
            interval=0.2,
            what="an estimated finish",
        )
        wait_for_status(client, auth, job_id, "succeeded", timeout=300)
        wait_for(lambda: receiver.requests, timeout=30, what="the webhook")

    assert running["status"] == "running" and running["estimated_finish"] > running["created_at"]
    plan = running["freeze_plan"]
    assert plan["epoch"] >= 1
    assert [(unit["name"], unit["state"]) for unit in plan["units"]] == [
        ("embeddings", "frozen"),
        ("layer 0", "frozen"),
        ("layer 1", "trainable"),
        ("head", "new"),
    ]
    [request] = receiver.requests
    event = openai.OpenAI(api_key="unused", webhook_secret=secret).webhooks.unwrap(
        request.body.decode(), request.headers
    )
    assert (event.type, event.data.id) == ("fine_tuning.job.succeeded", job_id)
    assert job_of(client, auth, job_id)["estimated_finish"] is None  # only while it runs
    events = client.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=5", headers=auth).json()["data"]
    assert any(e["message"].startswith("Webhook fine_tuning.job.succeeded delivered") for e in events)


def test_a_second_job_on_a_warm_worker_reuses_its_base_model_and_cached_features_and_reports_its_speed(
    client: TestClient, auth: dict[str, str], tiny_bert: str, worker: subprocess.Popen[bytes]
) -> None:
    training = upload_file(client, auth, jsonl_bytes(sentiment_rows(64)))
    body = {
        "model": tiny_bert,
        "training_file": training,
        "strategy": {"type": "feature_extraction"},
        "hyperparameters": {"n_epochs": 1, "batch_size": 16},
    }
    first, second = [], []
    for run_records in (first, second):
        job_id = client.post("/v1/fine_tuning/jobs", headers=auth, json=body).json()["id"]
        job = wait_for_status(client, auth, job_id, "succeeded", timeout=120)
        events = client.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=100", headers=auth).json()["data"]
        run_records.extend([job, [e["message"] for e in events], [e["data"] or {} for e in events]])

    first_features = next(d for d in first[2] if "frozen_features" in d and "from_cache" in d)
    second_features = next(d for d in second[2] if "frozen_features" in d and "from_cache" in d)
    assert (first_features["frozen_features"], first_features["from_cache"]) == ("cached", False)
    assert (second_features["frozen_features"], second_features["from_cache"]) == ("cached", True)
    assert first_features["first_token_only"] is True  # BERT's pooler reads [CLS] alone
    # The standby process that took the second job had loaded the first job's base model before it arrived.
    assert not any("Base model taken from the worker's memory" in m for m in first[1])
    assert any("Base model taken from the worker's memory" in m for m in second[1])
    for job in (first[0], second[0]):
        performance = job["performance"]
        assert performance["samples_per_second"] > 0 and performance["tokens_per_second"] > 0
        assert 0 < performance["seconds_to_first_step"] < 60
        assert performance["peak_memory_bytes"] > 10 * 1024**2
        assert performance["frozen_features"] == "cached"
    assert any(m.startswith("Trained at ") for m in second[1])


@pytest.mark.fault
def test_cancel_stops_a_running_job_within_seconds_and_publishes_no_weights(
    client: TestClient, auth: dict[str, str], tiny_bert: str, worker: subprocess.Popen[bytes]
) -> None:
    job_id = create_job(client, auth, tiny_bert, hyperparameters={"n_epochs": 100, "batch_size": 4})
    wait_for(
        lambda: (job_of(client, auth, job_id).get("progress") or {}).get("step", 0) > 0,
        timeout=90,
        what="training to take its first step",
    )
    assert training_processes(job_id)
    response = client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=auth)
    assert response.json()["status"] == "cancelled"
    wait_for(lambda: not training_processes(job_id), timeout=10, what="the training process to end")
    job = job_of(client, auth, job_id)
    assert job["status"] == "cancelled"
    assert job["fine_tuned_model"] is None
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}/weights", headers=auth).status_code == 404


def test_a_job_whose_base_model_vanished_fails_with_an_actionable_error(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    tiny_bert_folder: Path,
    tmp_path: Path,
    worker: subprocess.Popen[bytes],
) -> None:
    doomed = shutil.copytree(tiny_bert_folder, tmp_path / "doomed")
    with session_scope(settings.database_url) as session:
        catalog.register_base_model(session, "doomed-bert", str(doomed))
    shutil.rmtree(doomed)
    job_id = create_job(client, auth, "doomed-bert", hyperparameters={"n_epochs": 1})
    job = wait_for_status(client, auth, job_id, "failed", timeout=60)
    assert job["error"]["code"] == "base_model_unavailable"
    assert str(doomed) in job["error"]["message"]


@pytest.mark.fault
def test_a_second_delivery_of_the_same_job_does_not_run_it_again(
    client: TestClient,
    auth: dict[str, str],
    tiny_bert: str,
    settings: Settings,
    worker: subprocess.Popen[bytes],
) -> None:
    job_id = create_job(client, auth, tiny_bert, hyperparameters={"n_epochs": 1})
    queue.enqueue_job_run(settings.broker_url, job_id)  # a duplicate message, as a broker may deliver
    wait_for_status(client, auth, job_id, "succeeded", timeout=90)
    events = client.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=100", headers=auth).json()["data"]
    started = [e for e in events if e["message"].startswith("Fine-tuning job started")]
    assert len(started) == 1
    assert job_of(client, auth, job_id)["attempt"] == 1


@pytest.mark.fault
def test_worker_shutdown_hands_the_running_job_back_and_the_next_worker_runs_it(
    client: TestClient, auth: dict[str, str], tiny_bert: str, settings: Settings, tmp_path: Path
) -> None:
    job_id = create_job(client, auth, tiny_bert, hyperparameters={"n_epochs": 15, "batch_size": 4})
    with running_worker(settings, tmp_path / "first.log") as first:
        wait_for(
            lambda: client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints", headers=auth).json()["data"],
            timeout=90,
            interval=0.05,
            what="the first checkpoint",
        )
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    assert not training_processes(job_id)
    job = job_of(client, auth, job_id)
    assert (job["status"], job["attempt"]) == ("queued", 1)
    events = client.get(f"/v1/fine_tuning/jobs/{job_id}/events", headers=auth).json()["data"]
    assert events[0]["message"].startswith("Worker shutting down: attempt 1 stopped at step")
    stopped_at = events[0]["data"]["step"]
    # A stop checkpoint at that step, or the epoch-end one when the stop came right after it.
    assert events[1]["message"].startswith(f"Checkpoint saved at step {stopped_at} (")

    with running_worker(settings, tmp_path / "second.log"):
        job = wait_for_status(client, auth, job_id, "succeeded", timeout=120)
    assert job["attempt"] == 2
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}/weights", headers=auth).status_code == 200
    events = client.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=100", headers=auth).json()["data"]
    [resumed_at] = [i for i, e in enumerate(events) if e["message"].startswith("Resumed from the checkpoint")]
    resumed_step = events[resumed_at]["data"]["resumed_from_step"]
    assert resumed_step == stopped_at  # nothing trained before the shutdown is lost
    steps_after_resume = [e["data"]["step"] for e in events[:resumed_at] if "train_loss" in (e["data"] or {})]
    assert steps_after_resume[-1] == resumed_step + 1  # events are newest first


@pytest.mark.fault
def test_a_starting_worker_requeues_a_run_whose_worker_died(
    client: TestClient, auth: dict[str, str], tiny_bert: str, settings: Settings, tmp_path: Path
) -> None:
    job_id = create_job(client, auth, tiny_bert, hyperparameters={"n_epochs": 1})
    with session_scope(settings.database_url) as session:  # a worker that claimed it, then vanished
        assert runs.claim_job(session, job_id, owner="gone:1", lease_seconds=0) == 1
    with running_worker(settings, tmp_path / "worker.log"):
        job = wait_for_status(client, auth, job_id, "succeeded", timeout=90)
    assert job["attempt"] == 2
    messages = [
        e["message"] for e in client.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=50", headers=auth).json()["data"]
    ]
    assert "Worker of attempt 1 lost (lease expired, 1 of 3 allowed losses); job returned to the queue" in messages


@pytest.mark.fault
def test_a_live_worker_takes_over_the_run_of_a_worker_killed_with_sigkill(
    client: TestClient, auth: dict[str, str], tiny_bert: str, settings: Settings, tmp_path: Path
) -> None:
    short_leases = settings.model_copy(update={"lease_seconds": 6})
    job_id = create_job(client, auth, tiny_bert, hyperparameters={"n_epochs": 4, "batch_size": 4})
    with running_worker(short_leases, tmp_path / "a.log"), running_worker(short_leases, tmp_path / "b.log"):
        wait_for(
            lambda: (job_of(client, auth, job_id).get("progress") or {}).get("step", 0) > 0,
            timeout=90,
            what="training to take its first step",
        )
        with session_scope(settings.database_url) as session:
            job = session.get(Job, job_id)
            assert job is not None and job.lease_owner is not None
            owner_pid = int(job.lease_owner.split(":")[-2])  # host:pid:token
        os.kill(owner_pid, signal.SIGKILL)
        finished = wait_for_status(client, auth, job_id, "succeeded", timeout=120)
    assert finished["attempt"] == 2
    messages = [
        e["message"] for e in client.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=100", headers=auth).json()["data"]
    ]
    assert "Worker of attempt 1 lost (lease expired, 1 of 3 allowed losses); job returned to the queue" in messages
