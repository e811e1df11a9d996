"""Which queued jobs the broker holds a message for: recorded sends, re-sends of lost ones, and giving up."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from models.errors import JobErrorCode
from models.services.runs import JobFailure, fail_job
from models.states import JobStatus
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
