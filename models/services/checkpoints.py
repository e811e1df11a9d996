"""Checkpoint records, written by the run that owns the job.

One per epoch end (kept until the job ends), plus the newest mid-epoch one ("interval", taken
every checkpoint_interval_seconds, or "stop", taken when a run is paused or its worker shuts
down): a newer checkpoint supersedes the older mid-epoch ones, so their files can go. Each
records its size, which counts toward its tenant's max_stored_bytes until the job ends
(models.services.quotas.stored_bytes): a paused job's checkpoints count until it is resumed to its end
or cancelled.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from models.checkpoint_kinds import CheckpointKind
from models.errors import InvalidRequest
from models.ids import IdPrefix, is_well_formed, new_id
from models.services import events
from models.services.fine_tuned_models import fine_tuned_model_name
from models.services.runs import ensure_run_owns_job
from models.states import JobStatus
from models.storage.tables import Checkpoint, Job


def record_checkpoint(
    session: Session,
    job_id: str,
    attempt: int,
    *,
    step: int,
    epoch: int,
    metrics: dict[str, float],
    blob_key: str,
    kind: CheckpointKind = CheckpointKind.epoch,
    size_bytes: int = 0,
) -> list[str]:
    """Insert a checkpoint whose files (`size_bytes` in all) are already published at `blob_key`.

    Returns the blob keys of the mid-epoch checkpoints it supersedes (their rows are deleted);
    delete those files after the commit. Raises LeaseLost. Does not commit.
    """
    ensure_run_owns_job(session, job_id, attempt)
    superseded = list(
        session.scalars(
            select(Checkpoint).where(
                Checkpoint.job_id == job_id, Checkpoint.kind != CheckpointKind.epoch.value, Checkpoint.step < step
            )
        )
    )
    for old in superseded:
        session.delete(old)
    session.add(
        Checkpoint(
            id=new_id(IdPrefix.checkpoint),
            job_id=job_id,
            attempt=attempt,
            step=step,
            epoch=epoch,
            kind=kind,
            metrics=metrics,
            blob_key=blob_key,
            size_bytes=size_bytes,
        )
    )
    where = f"end of epoch {epoch}" if kind is CheckpointKind.epoch else f"{kind} checkpoint during epoch {epoch + 1}"
    events.append_event(
        session,
        job_id,
        f"Checkpoint saved at step {step} ({where}, {size_bytes} bytes)",
        data={"step": step, "kind": kind, "size_bytes": size_bytes},
    )
    return [old.blob_key for old in superseded]


def list_checkpoints(session: Session, job_id: str, *, after: str | None, limit: int) -> tuple[list[Checkpoint], bool]:
    """Newest first; `after` is the last checkpoint id of the previous page. Returns (rows, has_more)."""
    query = select(Checkpoint).where(Checkpoint.job_id == job_id)
    if after is not None:
        cursor = session.get(Checkpoint, after) if is_well_formed(after, IdPrefix.checkpoint) else None
        if cursor is None or cursor.job_id != job_id:
            raise InvalidRequest(f"after: {after!r} is not a checkpoint of this job", param="after")
        query = query.where(
            (Checkpoint.step < cursor.step) | ((Checkpoint.step == cursor.step) & (Checkpoint.id < cursor.id))
        )
    rows = list(session.scalars(query.order_by(Checkpoint.step.desc(), Checkpoint.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def checkpoint_blob_keys_newest_first(session: Session, job_id: str) -> list[str]:
    """Where the job's checkpoints were published, newest first, whichever run wrote them."""
    return list(
        session.scalars(
            select(Checkpoint.blob_key)
            .where(Checkpoint.job_id == job_id)
            .order_by(Checkpoint.step.desc(), Checkpoint.created_at.desc())
        )
    )


def checkpoint_model_name(job: Job, checkpoint: Checkpoint) -> str:
    return f"{fine_tuned_model_name(job)}:ckpt-step-{checkpoint.step}"


def describe_metrics(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value:.4f}" for name, value in sorted(metrics.items()) if isinstance(value, float))


def ended_jobs_with_checkpoints(session: Session, *, limit: int = 100) -> list[str]:
    """Jobs that failed or were cancelled but still hold checkpoints (resume state nobody can use)."""
    return list(
        session.scalars(
            select(Job.id)
            .where(Job.status.in_([JobStatus.failed.value, JobStatus.cancelled.value]))
            .where(Job.id.in_(select(Checkpoint.job_id)))
            .limit(limit)
        )
    )


def forget_checkpoints(session: Session, job_id: str) -> None:
    """Delete the checkpoint rows of a job that ended; delete its files (checkpoints_prefix) first. No commit."""
    session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id))
