"""A job's runs: claim, lease and fence, and the end states a run moves the job to, each a compare-and-set."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.errors import JobErrorCode
from models.services import events, webhooks
from models.services.events import EventLevel, JobControl
from models.services.fine_tuned_models import fine_tuned_model_name
from models.states import TERMINAL_STATUSES, JobStatus, sources_of
from models.storage.tables import Job, utc_now


class LeaseLost(Exception):
    """The run no longer owns the job (cancelled, finished, or taken over); it must stop writing."""


@dataclass(frozen=True)
class JobFailure:
    code: str
    message: str


def pause_run(session: Session, job_id: str, attempt: int, *, step: int) -> bool:
    """`running → paused` for a run that stopped at its pause checkpoint; False if it had lost the job."""
    paused = transition_job(
        session,
        job_id,
        JobStatus.paused,
        attempt=attempt,
        values={"lease_owner": None, "lease_expires_at": None, "pause_requested_at": None},
    )
    if paused and step >= 0:
        events.append_event(
            session, job_id, f"Job paused at step {step}; resume it to continue from there", data={"step": step}
        )
    elif paused:
        events.append_event(
            session,
            job_id,
            "Job paused; the run stopped before its pause checkpoint, so resuming continues from the "
            "newest checkpoint before it",
        )
    return paused


def transition_job(
    session: Session,
    job_id: str,
    target: JobStatus,
    *,
    attempt: int | None = None,
    values: dict[str, Any] | None = None,
    only_from: JobStatus | None = None,
) -> bool:
    """The one way a status changes: `UPDATE … WHERE status IN (legal sources) [AND attempt = ?]`.

    Returns whether this call made the change; a racing writer makes it False, never both True.
    A change to an end state (or `paused`) writes the tenant's webhook deliveries with it.
    """
    sources = sources_of(target) if only_from is None else sources_of(target) & {only_from}
    if attempt is not None:
        # A run can only move the job it is running: an old attempt's late write must not touch
        # a job that was paused, re-queued or resumed since (they keep the attempt number).
        sources = sources & {JobStatus.running}
    query = update(Job).where(Job.id == job_id, Job.status.in_([source.value for source in sources]))
    if attempt is not None:
        query = query.where(Job.attempt == attempt)
    result = session.execute(
        query.values(status=target.value, **(values or {})).execution_options(synchronize_session=False)
    )
    changed = bool(result.rowcount == 1)  # type: ignore[attr-defined]
    if changed:
        # In this transaction: the notification exists exactly when the change does (models.services.webhooks).
        webhooks.record_job_notifications(session, job_id, target)
    return changed


def claim_job(session: Session, job_id: str, *, owner: str, lease_seconds: int) -> int | None:
    """Take a `queued` job for one run: `queued → running`, attempt + 1, a fresh lease.

    Returns the new attempt number, or None if the job is not queued (a duplicate delivery,
    a cancelled or finished job). `owner` must be unique to this delivery: claiming again with
    the same owner returns the same attempt (a rerun after a lost commit). Does not commit.
    """
    job = session.get(Job, job_id)
    if job is not None and job.status == JobStatus.running.value and job.lease_owner == owner:
        return job.attempt  # this very claim, committed by an earlier try whose answer was lost
    if job is None or job.status != JobStatus.queued.value:
        return None
    attempt = job.attempt + 1
    now = utc_now()
    claimed = transition_job(
        session,
        job_id,
        JobStatus.running,
        values={
            "attempt": attempt,
            "lease_owner": owner,
            "lease_expires_at": now + timedelta(seconds=lease_seconds),
            "started_at": job.started_at or now,
        },
    )
    if not claimed:
        return None
    events.append_event(session, job_id, f"Fine-tuning job started (attempt {attempt}, worker {owner})")
    return attempt


class LeaseState(StrEnum):
    held = "held"
    pause_requested = "pause_requested"  # still held; the run should checkpoint and stop
    lost = "lost"  # cancelled, or taken over: stop at once, write nothing


def renew_lease(session: Session, job_id: str, attempt: int, *, lease_seconds: int) -> LeaseState:
    """Extend the run's lease and say whether the run still owns the job, and whether a pause was asked for."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.running.value)
        .values(lease_expires_at=utc_now() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return LeaseState.lost
    pause_requested = session.scalar(select(Job.pause_requested_at).where(Job.id == job_id)) is not None
    return LeaseState.pause_requested if pause_requested else LeaseState.held


def record_progress(session: Session, job_id: str, attempt: int, **values: Any) -> None:
    """Write a run's progress fields (progress, trained_tokens, parameter counts); raises LeaseLost."""
    _fenced_update(session, job_id, attempt, values)


def _fenced_update(session: Session, job_id: str, attempt: int, values: dict[str, Any]) -> None:
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.running.value)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(job_id)


def ensure_run_owns_job(session: Session, job_id: str, attempt: int) -> None:
    """Raise LeaseLost unless attempt `attempt` is still the running owner of the job.

    A no-op write rather than a read: it takes the row lock, so the caller's other writes in this
    transaction cannot interleave with a cancel.
    """
    _fenced_update(session, job_id, attempt, {"attempt": attempt})


def complete_job(
    session: Session,
    job_id: str,
    attempt: int,
    *,
    trained_tokens: int,
    result_files: list[str] | None = None,
    best_checkpoint: dict[str, Any] | None = None,
) -> str | None:
    """`running → succeeded` for this attempt; returns the fine-tuned model name, or None if it lost the race.

    A pause still pending is dropped, with an event that says so: the run finished before it saw it.
    Does not commit.
    """
    job = session.get(Job, job_id)
    if job is None:
        return None
    name = fine_tuned_model_name(job)
    succeeded = transition_job(
        session,
        job_id,
        JobStatus.succeeded,
        attempt=attempt,
        values={
            "fine_tuned_model": name,
            "finished_at": utc_now(),
            "trained_tokens": trained_tokens,
            "result_files": result_files or [],
            "best_checkpoint": best_checkpoint,
            "lease_owner": None,
            "lease_expires_at": None,
        },
    )
    if not succeeded:
        return None
    # Read after the move, which holds the row: a pause is requested only of a running job, so
    # none can arrive between this read and the clearing below.
    if session.scalar(select(Job.pause_requested_at).where(Job.id == job_id)) is not None:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(pause_requested_at=None)
            .execution_options(synchronize_session=False)
        )
        _record_dropped_pause(session, job_id)
    events.append_event(session, job_id, f"New fine-tuned model created: {name}")
    events.append_event(session, job_id, "The job has successfully completed")
    return name


def _record_dropped_pause(session: Session, job_id: str) -> None:
    request = events.newest_control_event(session, job_id, JobControl.pause)
    step = (request.data or {}).get("step") if request is not None else None
    when = f" at step {step}" if isinstance(step, int) else ""
    events.append_event(
        session,
        job_id,
        f"The pause requested{when} arrived as the run was finishing its last steps, so the job completed "
        "instead of pausing",
        level=EventLevel.warn,
        data={"pause_requested_at_step": step} if isinstance(step, int) else None,
    )


def fail_job(
    session: Session, job_id: str, attempt: int | None, failure: JobFailure, *, only_from: JobStatus | None = None
) -> bool:
    """Move the job to `failed` with a code and an actionable message; False if it had already ended.

    `only_from` narrows the legal sources to one status (e.g. fail a job only while still queued).
    """
    failed = transition_job(
        session,
        job_id,
        JobStatus.failed,
        attempt=attempt,
        only_from=only_from,
        values={
            "error_code": failure.code,
            "error_message": failure.message,
            "finished_at": utc_now(),
            "lease_owner": None,
            "lease_expires_at": None,
        },
    )
    if failed:
        events.append_event(session, job_id, f"Job failed: {failure.message}", level=EventLevel.error)
    return failed


def hand_back_job(session: Session, job_id: str, attempt: int, *, step: int) -> bool:
    """`running → queued` for this attempt (its worker is shutting down); False if the run had lost the job.

    `step` is where the run's stop checkpoint left it (-1 if it was killed before writing one).
    No message is sent here: the stopping worker would take it back. Live workers' sweeps re-send
    it (worker.reconciler), and so does the next worker to start.
    """
    handed_back = transition_job(
        session,
        job_id,
        JobStatus.queued,
        attempt=attempt,
        values={"lease_owner": None, "lease_expires_at": None, "enqueued_at": None, "pause_requested_at": None},
    )
    if handed_back:
        where = f" at step {step}" if step >= 0 else ""
        events.append_event(
            session,
            job_id,
            f"Worker shutting down: attempt {attempt} stopped{where} and the job returned to the queue",
            data={"step": step} if step >= 0 else None,
        )
    return handed_back


def has_ended(session: Session, job_id: str) -> bool:
    job = session.get(Job, job_id)
    return job is not None and JobStatus(job.status) in TERMINAL_STATUSES


def succeeded_with_attempt(session: Session, job_id: str, attempt: int) -> bool:
    job = session.get(Job, job_id)
    return job is not None and job.status == JobStatus.succeeded.value and job.attempt == attempt


def pause_is_requested(session: Session, job_id: str) -> bool:
    return session.scalar(select(Job.pause_requested_at).where(Job.id == job_id)) is not None


def recover_lost_runs(session: Session, *, max_attempts: int) -> list[str]:
    """Re-queue `running` jobs whose lease expired (their worker died); fail those out of attempts,
    and pause those whose pause was requested.

    Returns the ids of the jobs put back in the queue. Does not commit.
    """
    expired = session.scalars(
        select(Job).where(Job.status == JobStatus.running.value, Job.lease_expires_at < utc_now())
    ).all()
    requeued = []
    for job in expired:
        lost_runs = job.lost_runs + 1
        if lost_runs >= max_attempts:
            if fail_job(
                session,
                job.id,
                job.attempt,
                JobFailure(
                    JobErrorCode.worker_crashed,
                    f"The job's worker was lost {lost_runs} times (attempt {job.attempt}); the job may be crashing "
                    "it (e.g. by running out of memory: try a smaller batch_size or max_length).",
                ),
            ):
                session.execute(update(Job).where(Job.id == job.id).values(lost_runs=lost_runs))
        elif job.pause_requested_at is not None:
            if transition_job(
                session,
                job.id,
                JobStatus.paused,
                attempt=job.attempt,
                values={
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "lost_runs": lost_runs,
                    "pause_requested_at": None,
                },
            ):
                events.append_event(
                    session,
                    job.id,
                    f"Worker of attempt {job.attempt} lost (lease expired) while pausing; the job is paused and "
                    "resumes from its newest checkpoint",
                )
        elif transition_job(
            session,
            job.id,
            JobStatus.queued,
            attempt=job.attempt,
            values={"lease_owner": None, "lease_expires_at": None, "lost_runs": lost_runs, "enqueued_at": utc_now()},
        ):
            events.append_event(
                session,
                job.id,
                f"Worker of attempt {job.attempt} lost (lease expired, {lost_runs} of {max_attempts} allowed losses); "
                "job returned to the queue",
            )
            requeued.append(job.id)
    return requeued
