"""Which queued jobs the broker holds a message for: recorded sends, re-sends of lost ones, and giving up."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from models.errors import JobErrorCode
from models.services.runs import JobFailure, fail_job
from models.states import JobStatus
from models.storage import broker
from models.storage.tables import Job, utc_now


def queued_job_ids(session: Session) -> list[str]:
    return list(session.scalars(select(Job.id).where(Job.status == JobStatus.queued.value).order_by(Job.created_at)))


def queued_job_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Job).where(Job.status == JobStatus.queued.value)) or 0)


def _sent_before(cutoff: datetime) -> ColumnElement[bool]:
    """The job's message went to the broker before `cutoff`, or was never recorded as sent."""
    return Job.enqueued_at.is_(None) | (Job.enqueued_at < cutoff)


def queued_job_ids_sent_before(session: Session, cutoff: datetime) -> list[str]:
    """Queued jobs whose message went to the broker before `cutoff` (or was never recorded as sent)."""
    return list(
        session.scalars(
            select(Job.id).where(Job.status == JobStatus.queued.value, _sent_before(cutoff)).order_by(Job.created_at)
        )
    )


def mark_enqueued(session: Session, job_ids: list[str]) -> None:
    """Record that the jobs' messages were handed to the broker just now. Does not commit."""
    if job_ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(job_ids))
            .values(enqueued_at=utc_now())
            .execution_options(synchronize_session=False)
        )


def mark_unsent(session: Session, job_id: str) -> None:
    """Record that the job's message never reached the broker, so the next sweep sends it. No commit."""
    session.execute(
        update(Job).where(Job.id == job_id).values(enqueued_at=None).execution_options(synchronize_session=False)
    )


def claim_resend(session: Session, job_id: str, cutoff: datetime) -> bool:
    """Compare-and-set `enqueued_at` of a queued job last sent before `cutoff`: True for the one caller
    that should send it again, so workers sweeping at the same moment send it once. Does not commit."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued.value, _sent_before(cutoff))
        .values(enqueued_at=utc_now())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def fail_unsent_job(session: Session, job_id: str) -> bool:
    """`queued → failed` for a job whose message never reached the broker; False if a worker already has it."""
    return fail_job(
        session,
        job_id,
        None,
        JobFailure(
            JobErrorCode.queue_unavailable,
            "The job queue was unreachable, so the job never started; create it again (your files are kept).",
        ),
        only_from=JobStatus.queued,
    )


class IfBrokerDown(StrEnum):
    """What becomes of a committed job whose message the broker did not take."""

    fail_job = "fail_job"  # a job just created: its client is told to retry, so this one must never start later
    keep_queued = "keep_queued"  # a job the user already has (resumed): the sweep sends it once the broker is back


class Dispatched(StrEnum):
    sent = "sent"
    kept_queued = "kept_queued"  # the broker was down; the job waits for the sweep
    failed = "failed"  # the broker was down; the job failed with queue_unavailable
    taken = "taken"  # the broker was down, but a worker had the job already (a sweep sent it meanwhile)


def send_job(session: Session, broker_url: str, job_id: str, *, if_broker_down: IfBrokerDown) -> Dispatched:
    """Hand a committed `queued` job's id to the broker, after the commit so a worker finds the row.

    When the broker is unreachable, records what `if_broker_down` says (no commit: the caller commits
    and answers; Dispatched.failed means the client must be told the job could not start).
    """
    try:
        broker.enqueue_job_run(broker_url, job_id)
    except broker.QueueUnavailable:
        if if_broker_down is IfBrokerDown.keep_queued:
            mark_unsent(session, job_id)
            return Dispatched.kept_queued
        return Dispatched.failed if fail_unsent_job(session, job_id) else Dispatched.taken
    return Dispatched.sent
