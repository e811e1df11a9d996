"""How the runner records the end of a run, for every way a training process can end."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from models import jobs, queue
from models.db import session_scope
from models.settings import Settings
from models.states import JobStatus
from models.tables import Job
from tests.models.test_jobs import new_job  # noqa: F401  (fixture)
from worker.runner import ChildResult, Interruption, RunnerSettings, record_run_end


@pytest.fixture
def running_job(settings: Settings, new_job: Callable[[], str]) -> tuple[str, int]:  # noqa: F811
    job_id = new_job()
    with session_scope(settings.database_url) as session:
        attempt = jobs.claim_job(session, job_id, owner="w:1:t", lease_seconds=30)
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
    failed = {"status": "failed", "code": "training_diverged", "message": "training loss became nan at step 3"}
    record_run_end(
        job_id,
        attempt,
        ChildResult(exit_code=1, payload=failed, interruption=Interruption.pause),
        RunnerSettings.from_settings(settings),
    )
    job = job_row(settings, job_id)
    assert (job.status, job.error_code) == ("failed", "training_diverged")


def test_a_stopped_run_whose_pause_was_withdrawn_is_queued_and_sent_at_once(
    settings: Settings, running_job: tuple[str, int]
) -> None:
    job_id, attempt = running_job
    before = queue.waiting_message_count(settings.broker_url)
    stopped = {"status": "stopped", "step": 12}
    record_run_end(  # the pause was asked for, the run stopped, and the user resumed meanwhile
        job_id,
        attempt,
        ChildResult(exit_code=4, payload=stopped, interruption=Interruption.pause),
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
        ChildResult(exit_code=4, payload={"status": "stopped", "step": 12}, interruption=None),
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
        ChildResult(exit_code=-signal.SIGTERM, payload=None, interruption=None),
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
        assert jobs.pause_run(session, job_id, attempt, step=5)
    with session_scope(settings.database_url) as session:  # e.g. a rerun after a lost commit
        assert not jobs.hand_back_job(session, job_id, attempt, step=5)
        assert not jobs.fail_job(session, job_id, attempt, jobs.JobFailure("internal_error", "late"))
    assert job_row(settings, job_id).status == JobStatus.paused


def test_a_lost_run_whose_pause_was_requested_ends_paused(settings: Settings, new_job: Callable[[], str]) -> None:  # noqa: F811
    job_id = new_job()
    with session_scope(settings.database_url) as session:
        assert jobs.claim_job(session, job_id, owner="gone:1:t", lease_seconds=0) == 1
    request_pause(settings, job_id)
    with session_scope(settings.database_url) as session:
        assert jobs.recover_lost_runs(session, max_attempts=3) == []
    job = job_row(settings, job_id)
    assert (job.status, job.lost_runs, job.pause_requested_at) == ("paused", 1, None)
