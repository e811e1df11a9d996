from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, update

from models.errors import InvalidTransition
from models.services import checkpoints, jobs, runs
from models.services.quotas import TenantQuotas
from models.services.runs import JobFailure, LeaseLost, LeaseState
from models.settings import Settings
from models.states import JobStatus
from models.storage.database import session_scope
from models.storage.tables import Job, JobEvent, utc_now


def claim(settings: Settings, job_id: str, owner: str = "test:1") -> int | None:
    with session_scope(settings.database_url) as session:
        return runs.claim_job(session, job_id, owner=owner, lease_seconds=30)


def status_of(settings: Settings, job_id: str) -> str:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.status


def race(*actions: Callable[[], Any]) -> list[Any]:
    """Run the actions in threads released at the same instant; return their results in order."""
    barrier = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)

    def run(index: int, action: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = action()
        except Exception as error:  # the loser's exception is its result
            results[index] = error

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_a_claim_moves_queued_to_running_with_a_new_attempt(settings: Settings, new_job: Callable[[], str]) -> None:
    job_id = new_job()
    assert claim(settings, job_id) == 1
    assert status_of(settings, job_id) == JobStatus.running
    assert claim(settings, job_id, owner="another:2") is None


def test_claiming_again_with_the_same_delivery_owner_returns_the_same_attempt(
    settings: Settings, new_job: Callable[[], str]
) -> None:
    """A claim rerun after its commit's answer was lost must not lose the job it already took."""
    job_id = new_job()
    assert claim(settings, job_id, owner="w:1:token") == 1
    assert claim(settings, job_id, owner="w:1:token") == 1
    assert claim(settings, job_id, owner="w:1:other") is None


def test_two_workers_claiming_at_once_yield_exactly_one_run(settings: Settings, new_job: Callable[[], str]) -> None:
    for _ in range(10):
        job_id = new_job()
        results = race(lambda j=job_id: claim(settings, j, "w:1"), lambda j=job_id: claim(settings, j, "w:2"))
        assert sorted(results, key=str) == [1, None]


def test_cancel_racing_completion_ends_in_exactly_one_final_state(
    settings: Settings, new_job: Callable[[], str]
) -> None:
    outcomes = set()
    for _ in range(20):
        job_id = new_job()
        attempt = claim(settings, job_id)
        assert attempt is not None

        def complete(j: str = job_id, a: int = attempt) -> str | None:
            with session_scope(settings.database_url) as session:
                return runs.complete_job(session, j, a, trained_tokens=10)

        def cancel(j: str = job_id) -> Job:
            with session_scope(settings.database_url) as session:
                job = session.get(Job, j)
                assert job is not None
                return jobs.cancel_job(session, job.tenant_id, j)

        completed, cancelled = race(complete, cancel)
        final = status_of(settings, job_id)
        if completed is not None:
            assert isinstance(cancelled, InvalidTransition)
            assert final == JobStatus.succeeded
        else:
            assert isinstance(cancelled, Job)
            assert final == JobStatus.cancelled
        outcomes.add(final)
        with session_scope(settings.database_url) as session:  # a final state never changes again
            assert not runs.fail_job(session, job_id, None, JobFailure("internal_error", "late"))
        assert status_of(settings, job_id) == final


def test_a_run_that_lost_its_job_can_no_longer_write(settings: Settings, new_job: Callable[[], str]) -> None:
    job_id = new_job()
    attempt = claim(settings, job_id)
    assert attempt is not None
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        jobs.cancel_job(session, job.tenant_id, job_id)
    with session_scope(settings.database_url) as session:
        assert runs.renew_lease(session, job_id, attempt, lease_seconds=30) is LeaseState.lost
        with pytest.raises(LeaseLost):
            runs.record_progress(session, job_id, attempt, trained_tokens=5)
        with pytest.raises(LeaseLost):
            checkpoints.record_checkpoint(session, job_id, attempt, step=1, epoch=1, metrics={}, blob_key="k")
        assert runs.complete_job(session, job_id, attempt, trained_tokens=5) is None
    assert status_of(settings, job_id) == JobStatus.cancelled


def test_writes_of_an_older_attempt_are_refused(settings: Settings, new_job: Callable[[], str]) -> None:
    job_id = new_job()
    attempt = claim(settings, job_id)
    assert attempt == 1
    with session_scope(settings.database_url) as session:  # the run is handed back and claimed again
        assert runs.transition_job(session, job_id, JobStatus.queued, attempt=attempt)
    assert claim(settings, job_id) == 2
    with session_scope(settings.database_url) as session:
        with pytest.raises(LeaseLost):
            runs.record_progress(session, job_id, 1, trained_tokens=1)
        runs.record_progress(session, job_id, 2, trained_tokens=1)


def test_a_failed_job_keeps_its_code_and_message(settings: Settings, new_job: Callable[[], str]) -> None:
    job_id = new_job()
    attempt = claim(settings, job_id)
    failure = JobFailure("out_of_memory", "ran out of memory; lower hyperparameters.batch_size")
    with session_scope(settings.database_url) as session:
        assert runs.fail_job(session, job_id, attempt, failure)
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert (job.status, job.error_code, job.error_message) == ("failed", failure.code, failure.message)
        assert job.finished_at is not None


def test_lost_runs_are_requeued_until_they_run_out_of_attempts(settings: Settings, new_job: Callable[[], str]) -> None:
    job_id = new_job()
    for attempt in (1, 2):
        with session_scope(settings.database_url) as session:
            assert runs.claim_job(session, job_id, owner="gone:1", lease_seconds=0) == attempt
        with session_scope(settings.database_url) as session:
            assert runs.recover_lost_runs(session, max_attempts=2) == ([job_id] if attempt == 1 else [])
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert (job.status, job.error_code, job.attempt) == ("failed", "worker_crashed", 2)


def test_runs_that_were_paused_or_handed_back_do_not_count_as_lost(
    settings: Settings, new_job: Callable[[], str]
) -> None:
    job_id = new_job()
    with session_scope(settings.database_url) as session:
        assert runs.claim_job(session, job_id, owner="w:1", lease_seconds=30) == 1
        assert runs.hand_back_job(session, job_id, 1, step=5)
    with session_scope(settings.database_url) as session:
        assert runs.claim_job(session, job_id, owner="w:2", lease_seconds=30) == 2
        job = session.get(Job, job_id)
        assert job is not None
        assert jobs.pause_job(session, job.tenant_id, job_id).status == "running"
        assert runs.pause_run(session, job_id, 2, step=9)
    with session_scope(settings.database_url) as session:
        assert runs.transition_job(session, job_id, JobStatus.queued, only_from=JobStatus.paused)
    with session_scope(settings.database_url) as session:
        assert runs.claim_job(session, job_id, owner="gone:3", lease_seconds=0) == 3
    with session_scope(settings.database_url) as session:
        assert runs.recover_lost_runs(session, max_attempts=2) == [job_id]  # the first loss of three runs
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert (job.status, job.attempt, job.lost_runs) == ("queued", 3, 1)


def test_a_live_lease_is_not_recovered(settings: Settings, new_job: Callable[[], str]) -> None:
    job_id = new_job()
    claim(settings, job_id)
    with session_scope(settings.database_url) as session:
        assert runs.recover_lost_runs(session, max_attempts=3) == []
    assert status_of(settings, job_id) == JobStatus.running


def test_job_pages_split_jobs_created_at_the_same_instant_by_id(settings: Settings, new_job: Callable[[], str]) -> None:
    ids = [new_job() for _ in range(5)]
    with session_scope(settings.database_url) as session:
        tenant_id = session.get_one(Job, ids[0]).tenant_id
        session.execute(update(Job).where(Job.id.in_(ids)).values(created_at=utc_now()))
    seen: list[str] = []
    after: str | None = None
    while True:
        with session_scope(settings.database_url) as session:
            rows, has_more = jobs.list_jobs(session, tenant_id, after=after, limit=2)
            seen += [row.id for row in rows]
        if not has_more:
            break
        after = seen[-1]
    assert seen == sorted(ids, reverse=True)


def events_of(settings: Settings, job_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(level, message, data) of the job's events, oldest first."""
    with session_scope(settings.database_url) as session:
        rows = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.sequence))
        return [(row.level, row.message, row.data) for row in rows]


def test_completing_a_run_whose_pause_was_pending_says_why_it_did_not_pause(
    settings: Settings, new_job: Callable[[], str]
) -> None:
    job_id = new_job()
    attempt = claim(settings, job_id)
    assert attempt is not None
    with session_scope(settings.database_url) as session:
        progress = {"step": 173, "total_steps": 189, "epoch": 2, "percent": 91.53}
        runs.record_progress(session, job_id, attempt, progress=progress)
    with session_scope(settings.database_url) as session:
        tenant_id = session.get_one(Job, job_id).tenant_id
        assert jobs.pause_job(session, tenant_id, job_id).status == JobStatus.running
    with session_scope(settings.database_url) as session:
        name = runs.complete_job(session, job_id, attempt, trained_tokens=10)
    assert events_of(settings, job_id)[-4:] == [
        (
            "info",
            "Pause requested at step 173 of 189: the run will checkpoint after its current step and stop",
            {"control": "pause", "step": 173, "total_steps": 189},
        ),
        (
            "warn",
            "The pause requested at step 173 arrived as the run was finishing its last steps, so the job completed "
            "instead of pausing",
            {"pause_requested_at_step": 173},
        ),
        ("info", f"New fine-tuned model created: {name}", None),
        ("info", "The job has successfully completed", None),
    ]
    with session_scope(settings.database_url) as session:
        job = session.get_one(Job, job_id)
        assert (job.status, job.pause_requested_at) == (JobStatus.succeeded, None)


def test_a_pause_requested_before_the_run_reported_a_step_is_reported_without_one(
    settings: Settings, new_job: Callable[[], str]
) -> None:
    job_id = new_job()
    attempt = claim(settings, job_id)
    assert attempt is not None
    with session_scope(settings.database_url) as session:
        jobs.pause_job(session, session.get_one(Job, job_id).tenant_id, job_id)
    with session_scope(settings.database_url) as session:
        assert runs.complete_job(session, job_id, attempt, trained_tokens=10) is not None
    assert events_of(settings, job_id)[-4:-2] == [
        ("info", "Pause requested: the run will checkpoint and stop", {"control": "pause"}),
        (
            "warn",
            "The pause requested arrived as the run was finishing its last steps, so the job completed instead of "
            "pausing",
            None,
        ),
    ]


def test_completing_a_run_with_its_pause_withdrawn_writes_no_pause_event(
    settings: Settings, new_job: Callable[[], str]
) -> None:
    job_id = new_job()
    attempt = claim(settings, job_id)
    assert attempt is not None
    with session_scope(settings.database_url) as session:
        tenant_id = session.get_one(Job, job_id).tenant_id
        jobs.pause_job(session, tenant_id, job_id)
        jobs.resume_job(session, tenant_id, job_id, quotas=TenantQuotas(10, 10**9, 10**9))
    with session_scope(settings.database_url) as session:
        assert runs.complete_job(session, job_id, attempt, trained_tokens=10) is not None
    assert [level for level, _, _ in events_of(settings, job_id)] == ["info"] * len(events_of(settings, job_id))


def test_a_repeated_pause_request_is_idempotent_while_pending_and_once_paused(
    settings: Settings, new_job: Callable[[], str]
) -> None:
    job_id = new_job()
    attempt = claim(settings, job_id)
    assert attempt is not None
    with session_scope(settings.database_url) as session:
        tenant_id = session.get_one(Job, job_id).tenant_id
        jobs.pause_job(session, tenant_id, job_id)
    written = len(events_of(settings, job_id))
    with session_scope(settings.database_url) as session:
        assert jobs.pause_job(session, tenant_id, job_id).status == JobStatus.running
    with session_scope(settings.database_url) as session:
        assert runs.pause_run(session, job_id, attempt, step=3)
    with session_scope(settings.database_url) as session:
        assert jobs.pause_job(session, tenant_id, job_id).status == JobStatus.paused
    assert len(events_of(settings, job_id)) == written + 1  # the run's own "Job paused at step 3"
