"""How the runner records the end of a run, for every way a training process can end."""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from models.services import checkpoints, jobs, quotas, runs
from models.services.quotas import Quota
from models.settings import Settings
from models.states import JobStatus
from models.storage import broker as queue
from models.storage.blob_keys import checkpoints_prefix, results_blob_key, weights_blob_key
from models.storage.blobs import ArtifactStore
from models.storage.database import session_scope
from models.storage.tables import Checkpoint, File, Job, ResultArtifact, Tenant
from tests.conftest import jsonl_bytes, upload_file
from tests.worker.training.conftest import sentiment_rows
from worker import runner
from worker.run_protocol import Failed, PublishedBlob, ResultsFile, RunReport, Stopped, Succeeded
from worker.runner import Interruption, RunEnd, RunnerSettings, record_run_end


@pytest.fixture
def running_job(settings: Settings, new_job: Callable[[], str]) -> tuple[str, int]:
    job_id = new_job()
    with session_scope(settings.database_url) as session:
        attempt = runs.claim_job(session, job_id, owner="w:1:t", lease_seconds=30)
    assert attempt is not None
    return job_id, attempt


def job_row(settings: Settings, job_id: str) -> Job:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def request_pause(settings: Settings, job_id: str) -> None:
    with session_scope(settings.database_url) as session:
        jobs.pause_job(session, job_row(settings, job_id).tenant_id, job_id)


def test_a_real_failure_during_a_pause_still_fails_the_job(settings: Settings, running_job: tuple[str, int]) -> None:
    job_id, attempt = running_job
    request_pause(settings, job_id)
    failed = Failed(code="training_diverged", message="training loss became nan at step 3")
    record_run_end(
        job_id,
        attempt,
        RunEnd(exit_code=1, report=RunReport(outcome=failed), interruption=Interruption.pause),
        RunnerSettings.from_settings(settings),
    )
    job = job_row(settings, job_id)
    assert (job.status, job.error_code) == ("failed", "training_diverged")


def test_a_stopped_run_whose_pause_was_withdrawn_is_queued_and_sent_at_once(
    settings: Settings, running_job: tuple[str, int]
) -> None:
    job_id, attempt = running_job
    before = queue.waiting_message_count(settings.broker_url)
    stopped = Stopped(step=12)
    record_run_end(  # the pause was asked for, the run stopped, and the user resumed meanwhile
        job_id,
        attempt,
        RunEnd(exit_code=4, report=RunReport(outcome=stopped), interruption=Interruption.pause),
        RunnerSettings.from_settings(settings),
    )
    assert job_row(settings, job_id).status == JobStatus.queued
    assert queue.waiting_message_count(settings.broker_url) == before + 1


def test_a_stopped_run_with_its_pause_still_requested_ends_paused(
    settings: Settings, running_job: tuple[str, int]
) -> None:
    job_id, attempt = running_job
    request_pause(settings, job_id)
    record_run_end(
        job_id,
        attempt,
        RunEnd(exit_code=4, report=RunReport(outcome=Stopped(step=12)), interruption=None),
        RunnerSettings.from_settings(settings),
    )
    job = job_row(settings, job_id)
    assert (job.status, job.pause_requested_at) == ("paused", None)


def test_a_training_process_sigtermed_by_someone_else_is_handed_back_not_failed(
    settings: Settings, running_job: tuple[str, int]
) -> None:
    job_id, attempt = running_job
    record_run_end(
        job_id,
        attempt,
        RunEnd(exit_code=-signal.SIGTERM, report=RunReport(), interruption=None),
        RunnerSettings.from_settings(settings),
    )
    job = job_row(settings, job_id)
    assert (job.status, job.error_code, job.lost_runs) == ("queued", None, 0)


def test_a_late_write_of_an_old_run_cannot_move_a_job_that_was_paused_since(
    settings: Settings, running_job: tuple[str, int]
) -> None:
    job_id, attempt = running_job
    request_pause(settings, job_id)
    with session_scope(settings.database_url) as session:
        assert runs.pause_run(session, job_id, attempt, step=5)
    with session_scope(settings.database_url) as session:  # e.g. a rerun after a lost commit
        assert not runs.hand_back_job(session, job_id, attempt, step=5)
        assert not runs.fail_job(session, job_id, attempt, runs.JobFailure("internal_error", "late"))
    assert job_row(settings, job_id).status == JobStatus.paused


def test_a_lost_run_whose_pause_was_requested_ends_paused(settings: Settings, new_job: Callable[[], str]) -> None:
    job_id = new_job()
    with session_scope(settings.database_url) as session:
        assert runs.claim_job(session, job_id, owner="gone:1:t", lease_seconds=0) == 1
    request_pause(settings, job_id)
    with session_scope(settings.database_url) as session:
        assert runs.recover_lost_runs(session, max_attempts=3) == []
    job = job_row(settings, job_id)
    assert (job.status, job.lost_runs, job.pause_requested_at) == ("paused", 1, None)


# The storage quota during a run: checkpoints and weights that do not fit fail the job, and nothing is kept


@pytest.fixture
def runner_settings(settings: Settings) -> Iterator[RunnerSettings]:
    yield RunnerSettings.from_settings(settings)
    runner.stop_standby()


def set_stored_bytes_quota(settings: Settings, job_id: str, limit: int) -> int:
    """Give the job's tenant `limit` bytes past what it stores now (as an administrator lowering it); returns that."""
    with session_scope(settings.database_url) as session:
        tenant_id = jobs.tenant_of(session, job_id)
        in_store = quotas.stored_bytes(session, tenant_id)
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        quotas.set_tenant_quota(session, tenant, Quota.max_stored_bytes, in_store + limit)
    return in_store


def kept_by(settings: Settings, job_id: str) -> dict[str, Any]:
    """What the job still holds: checkpoint and artifact rows, result files, and blobs under its folder."""
    with session_scope(settings.database_url) as session:
        tenant_id = jobs.tenant_of(session, job_id)
        return {
            "checkpoints": session.scalar(select(func.count()).where(Checkpoint.job_id == job_id)),
            "artifacts": session.scalar(select(func.count()).where(ResultArtifact.job_id == job_id)),
            "result_files": session.scalar(select(func.count()).where(File.purpose == "fine-tune-results")),
            "blobs": sorted(str(path) for path in (settings.artifacts / "jobs" / job_id).rglob("*") if path.is_file()),
            "stored_bytes": quotas.stored_bytes(session, tenant_id),
        }


def test_a_real_run_whose_checkpoint_crosses_the_storage_quota_fails_and_keeps_nothing(
    client: TestClient, auth: dict[str, str], settings: Settings, tiny_bert: str, runner_settings: RunnerSettings
) -> None:
    training = upload_file(client, auth, jsonl_bytes(sentiment_rows(32)))
    response = client.post(
        "/v1/fine_tuning/jobs",
        headers=auth,
        json={"model": tiny_bert, "training_file": training, "hyperparameters": {"n_epochs": 2, "batch_size": 16}},
    )
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    # A checkpoint of tiny BERT under `full` is about 330 kB: the first (step 2) fits, the second (step 4) does not.
    in_store = set_stored_bytes_quota(settings, job_id, 400_000)

    runner.run_job(job_id, runner_settings)

    job = job_row(settings, job_id)
    assert (job.status, job.error_code) == ("failed", "storage_quota_exceeded")
    assert job.error_message is not None
    assert job.error_message.startswith("storage quota exceeded: the checkpoint at step 4 (")
    assert f"past your storage quota (max_stored_bytes={in_store + 400_000} bytes;" in job.error_message
    assert kept_by(settings, job_id) == {
        "checkpoints": 0,
        "artifacts": 0,
        "result_files": 0,
        "blobs": [],
        "stored_bytes": in_store,
    }
    assert list((settings.artifacts / ".tmp").iterdir()) == []
    events = client.get(f"/v1/fine_tuning/jobs/{job_id}/events", headers=auth).json()["data"]
    saved = [event for event in events if event["message"].startswith("Checkpoint saved at step 2")]
    assert saved and 300_000 < saved[0]["data"]["size_bytes"] < 400_000


RESULTS = b"step,epoch\n1,1\n"


def finished_run(
    settings: Settings, job_id: str, attempt: int, *, checkpoint_bytes: int, weights_bytes: int
) -> Succeeded:
    """What a run that succeeded leaves: an epoch checkpoint, and the weights and results it reports."""
    store = ArtifactStore(settings.artifacts)
    checkpoint_key = f"{checkpoints_prefix(job_id)}/step-00000004-attempt-{attempt}"
    with store.open_blob_writer(f"{checkpoint_key}/trainable.safetensors") as handle:
        handle.write(b"c" * checkpoint_bytes)
    with session_scope(settings.database_url) as session:
        checkpoints.record_checkpoint(
            session, job_id, attempt, step=4, epoch=1, metrics={}, blob_key=checkpoint_key, size_bytes=checkpoint_bytes
        )
    weights = b"w" * weights_bytes
    for key, content in ((weights_blob_key(job_id, attempt), weights), (results_blob_key(job_id, attempt), RESULTS)):
        with store.open_blob_writer(key) as handle:
            handle.write(content)
    return Succeeded(
        trained_tokens=100,
        weights=PublishedBlob(
            blob_key=weights_blob_key(job_id, attempt),
            size_bytes=len(weights),
            sha256=hashlib.sha256(weights).hexdigest(),
        ),
        results=ResultsFile(
            blob_key=results_blob_key(job_id, attempt),
            size_bytes=len(RESULTS),
            sha256=hashlib.sha256(RESULTS).hexdigest(),
            record_count=1,
        ),
    )


def test_weights_that_do_not_fit_the_storage_quota_fail_the_job_and_nothing_is_kept(
    settings: Settings, running_job: tuple[str, int]
) -> None:
    job_id, attempt = running_job
    in_store = set_stored_bytes_quota(settings, job_id, 3000)
    outcome = finished_run(settings, job_id, attempt, checkpoint_bytes=2000, weights_bytes=5000)

    record_run_end(
        job_id,
        attempt,
        RunEnd(exit_code=0, report=RunReport(outcome=outcome), interruption=None),
        RunnerSettings.from_settings(settings),
    )

    job = job_row(settings, job_id)
    assert (job.status, job.error_code, job.fine_tuned_model) == ("failed", "storage_quota_exceeded", None)
    assert job.error_message is not None
    assert job.error_message.startswith(
        f"storage quota exceeded: the fine-tuned weights (5000 bytes) would bring what you store to "
        f"{in_store + 5000 + len(RESULTS)} bytes, past your storage quota "
        f"(max_stored_bytes={in_store + 3000} bytes;"
    )
    assert kept_by(settings, job_id) == {
        "checkpoints": 0,
        "artifacts": 0,
        "result_files": 0,
        "blobs": [],
        "stored_bytes": in_store,
    }


def test_weights_that_fit_once_the_jobs_checkpoints_are_freed_are_published(
    settings: Settings, running_job: tuple[str, int]
) -> None:
    job_id, attempt = running_job
    in_store = set_stored_bytes_quota(settings, job_id, 3000)
    outcome = finished_run(settings, job_id, attempt, checkpoint_bytes=2000, weights_bytes=2500)

    record_run_end(
        job_id,
        attempt,
        RunEnd(exit_code=0, report=RunReport(outcome=outcome), interruption=None),
        RunnerSettings.from_settings(settings),
    )

    assert job_row(settings, job_id).status == JobStatus.succeeded
    kept = kept_by(settings, job_id)
    assert (kept["artifacts"], kept["result_files"]) == (1, 1)
    assert kept["stored_bytes"] == in_store + 2500 + len(RESULTS)
    assert kept["blobs"] == sorted(
        str(settings.artifacts / key) for key in (weights_blob_key(job_id, attempt), results_blob_key(job_id, attempt))
    )
