"""Fine-tuning jobs: creation rules and every status change, each a compare-and-set on the job row."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from psycopg import AsyncConnection
from sqlalchemy import Connection, bindparam, func, select, tuple_, update
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from models import catalog, events, tenants
from models.data_formats import ordered_labels
from models.errors import InvalidRequest, InvalidTransition, JobErrorCode, NotFound
from models.events import EventLevel, JobControl
from models.files import get_file
from models.hyperparameters import resolve_hyperparameters, resolve_strategy
from models.ids import IdPrefix, is_well_formed, new_id
from models.quotas import TenantQuotas, ensure_job_slot, ensure_room_for_job
from models.schemas import FilePurpose, FileStatus, JobCreate
from models.states import TERMINAL_STATUSES, JobStatus, sources_of
from models.storage_estimates import estimate_job_storage
from models.tables import ApiKey, File, Job, utc_now

MIN_CLASSES = 2


class LeaseLost(Exception):
    """The run no longer owns the job (cancelled, finished, or taken over); it must stop writing."""


@dataclass(frozen=True)
class JobFailure:
    code: str
    message: str


def create_job(session: Session, tenant_id: str, spec: JobCreate, *, quotas: TenantQuotas) -> Job:
    """Validate a request against the catalog and the files, and insert the job as `queued`.

    Every "auto" is resolved here, so the job row records the values training will use.
    Raises InvalidRequest naming the field at fault, QuotaExceeded at the tenant's job limit,
    PayloadTooLarge (`param` max_stored_bytes) when the job's estimated storage does not fit.
    Does not commit.
    """
    ensure_job_slot(session, tenant_id, quotas)
    try:
        base_model = catalog.get_base_model(session, spec.model)
    except NotFound as error:
        raise InvalidRequest(error.message, param="model") from None
    training = _usable_file(session, tenant_id, spec.training_file, "training_file")
    validation = (
        _usable_file(session, tenant_id, spec.validation_file, "validation_file") if spec.validation_file else None
    )
    label_names = _training_labels(training)
    if validation is not None:
        _check_validation_matches_training(training, validation)
    strategy = resolve_strategy(spec.strategy, base_model.num_layers)
    hyperparameters = resolve_hyperparameters(
        spec.requested_hyperparameters(),
        strategy.type,
        training_records=training.record_count,
        model_max_length=base_model.max_sequence_length,
    )
    ensure_room_for_job(session, tenant_id, quotas, estimate_job_storage(base_model, strategy, hyperparameters))
    job = Job(
        id=new_id(IdPrefix.job),
        tenant_id=tenant_id,
        base_model_id=base_model.id,
        training_file_id=training.id,
        validation_file_id=validation.id if validation else None,
        task=spec.task.value,
        strategy=strategy.as_dict(),
        hyperparameters=hyperparameters.as_dict(),
        label_names=list(label_names),
        seed=spec.seed if spec.seed is not None else secrets.randbelow(2**31),
        suffix=spec.suffix,
        user_metadata=spec.metadata,
        status=JobStatus.queued.value,
        enqueued_at=utc_now(),  # the caller sends the message right after committing
    )
    session.add(job)
    session.flush()
    events.append_event(session, job.id, f"Created fine-tuning job: {job.id}")
    events.append_event(
        session,
        job.id,
        f"Validated training file {training.id}: {training.record_count} records, {len(label_names)} labels",
    )
    events.append_event(session, job.id, "Job queued")
    return job


def _no_such_job(job_id: str) -> str:
    return f"No fine-tuning job {job_id} exists for your API key; check the id (GET /v1/fine_tuning/jobs lists yours)"


def get_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """The tenant's job; another tenant's job is NotFound, exactly like a missing one."""
    job = session.get(Job, job_id) if is_well_formed(job_id, IdPrefix.job) else None
    if job is None or job.tenant_id != tenant_id:
        raise NotFound(_no_such_job(job_id), param="fine_tuning_job_id")
    return job


# The job and the presented key's row in one statement: an API GET authenticates and reads in one round trip.
_JOB_FIELDS = tuple(Job.__mapper__.columns.keys())  # attribute names, in the statement's column order
_KEY_COLUMNS = (ApiKey.tenant_id, ApiKey.secret_sha256, ApiKey.revoked_at, ApiKey.id, ApiKey.last_used_at)
_JOB_ID_AT = len(_KEY_COLUMNS) + _JOB_FIELDS.index("id")  # after the key's columns; None when no job matched
_JOB_WITH_KEY = (
    select(*_KEY_COLUMNS, *Job.__mapper__.columns.values())
    .select_from(ApiKey)
    .outerjoin(Job, (Job.id == bindparam("job_id")) & (Job.tenant_id == ApiKey.tenant_id))
    .where(ApiKey.lookup_prefix == bindparam("lookup"))
)


_PSYCOPG = psycopg_dialect()  # type: ignore[no-untyped-call]
_JOB_WITH_KEY_ON_PSYCOPG = str(_JOB_WITH_KEY.compile(dialect=_PSYCOPG))
_PSYCOPG_RESULT = tuple(
    column.type.dialect_impl(_PSYCOPG).result_processor(_PSYCOPG, None) for column in _JOB_WITH_KEY.selected_columns
)


class _KeyColumns(NamedTuple):
    tenant_id: str
    secret_sha256: str
    revoked_at: datetime | None
    id: str
    last_used_at: datetime | None


class KeyedJob(NamedTuple):
    """A job read with the key that asked for it; `key_use_to_note` is the key's id when its last use is
    stale (tenants.key_use_is_stale), for the caller to record once it has answered."""

    job: Job
    key_use_to_note: str | None


def get_job_for_key(connection: Connection, presented_key: str, job_id: str) -> KeyedJob:
    """The job `job_id` of the tenant behind `presented_key`, both read by one statement.

    Answers exactly as `tenants.authenticate` then `get_job` would: Unauthorized for a malformed,
    unknown or revoked key (checked first, from the key's row as it is now, so a revocation takes
    effect at once), then NotFound for a missing job or another tenant's. The job is a detached
    object, read-only. Reads only; `connection` needs no transaction (db.run_read).
    """
    lookup, secret = tenants.split_key(presented_key)
    row = connection.execute(_JOB_WITH_KEY, _job_with_key_parameters(lookup, job_id)).first()
    return _job_of_key_row(tuple(row) if row is not None else None, secret, job_id)


async def read_job_for_key(connection: AsyncConnection[Any], presented_key: str, job_id: str) -> KeyedJob:
    """`get_job_for_key` on a psycopg asyncio connection (models.read_pool): the same statement and answers."""
    lookup, secret = tenants.split_key(presented_key)
    cursor = await connection.execute(_JOB_WITH_KEY_ON_PSYCOPG, _job_with_key_parameters(lookup, job_id))
    row = await cursor.fetchone()
    if row is None:
        return _job_of_key_row(None, secret, job_id)
    # What SQLAlchemy does to each value on its way out (UTCDateTime's conversion to UTC, say).
    values = tuple(
        value if process is None else process(value) for process, value in zip(_PSYCOPG_RESULT, row, strict=True)
    )
    return _job_of_key_row(values, secret, job_id)


def _job_with_key_parameters(lookup: str, job_id: str) -> dict[str, str | None]:
    return {"lookup": lookup, "job_id": job_id if is_well_formed(job_id, IdPrefix.job) else None}


def _job_of_key_row(row: tuple[Any, ...] | None, secret: str, job_id: str) -> KeyedJob:
    key = _KeyColumns(*row[: len(_KEY_COLUMNS)]) if row is not None else None
    tenants.tenant_of_key(key, secret)
    if row is None or key is None or row[_JOB_ID_AT] is None:
        raise NotFound(_no_such_job(job_id), param="fine_tuning_job_id")
    job = Job(**dict(zip(_JOB_FIELDS, row[len(_KEY_COLUMNS) :], strict=True)))
    return KeyedJob(job, key.id if tenants.key_use_is_stale(key.last_used_at) else None)


def list_jobs(
    session: Session, tenant_id: str, *, after: str | None, limit: int, metadata: dict[str, str] | None = None
) -> tuple[list[Job], bool]:
    """Newest first; `after` is the last job id of the previous page. Returns (jobs, has_more)."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if after is not None:
        try:
            cursor = get_job(session, tenant_id, after)
        except NotFound:
            raise InvalidRequest(
                f"after: {after!r} is not one of your jobs; pass the id of the last job of the previous page",
                param="after",
            ) from None
        # A row-value comparison: PostgreSQL starts the index scan at the cursor (ix_jobs_tenant_created_id).
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(cursor.created_at, cursor.id))
    query = query.order_by(Job.created_at.desc(), Job.id.desc())
    if not metadata:
        rows = list(session.scalars(query.limit(limit + 1)))
        return rows[:limit], len(rows) > limit
    # Metadata is JSON, filtered portably in Python: stream rows and stop after limit + 1 matches.
    matches: list[Job] = []
    for row in session.scalars(query.execution_options(yield_per=200)):
        if all((row.user_metadata or {}).get(key) == value for key, value in metadata.items()):
            matches.append(row)
            if len(matches) > limit:
                break
    return matches[:limit], len(matches) > limit


def cancel_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """Move a job that has not ended to `cancelled`; a running job's worker stops it within seconds.

    Never rate-limited: a job is cancelled once, so a cancel adds at most one event, and a user must
    always be able to stop a job (even right after a burst of pauses and resumes). Raises
    InvalidTransition for a job that already ended. Does not commit.
    """
    job = get_job(session, tenant_id, job_id)
    if not transition_job(session, job.id, JobStatus.cancelled, values={"finished_at": utc_now()}):
        session.refresh(job)
        raise InvalidTransition(
            f"Job {job.id} already ended ({job.status}), so it cannot be cancelled; only a queued, running or "
            "paused job can be.",
            param="fine_tuning_job_id",
        )
    events.append_control_event(session, job.id, JobControl.cancel, "Job cancelled")
    session.refresh(job)
    return job


def pause_job(session: Session, tenant_id: str, job_id: str, *, control_events_per_minute: int | None = None) -> Job:
    """Pause a job (OpenAI's `POST /pause`). Does not commit.

    A queued job becomes `paused` at once. A running job is asked to pause: its run checkpoints
    after the step in progress, frees its worker, and the job becomes `paused` within a heartbeat
    or two (plus the checkpoint's write time). Pausing a paused job, or a running one whose pause
    is pending, changes nothing and writes nothing. A job that ended raises InvalidTransition;
    QuotaExceeded when the job's control requests reached `control_events_per_minute`.
    """
    job = get_job(session, tenant_id, job_id)
    if _is_paused_or_pausing(job):
        return job
    if job.status in (JobStatus.queued.value, JobStatus.running.value):
        events.ensure_control_allowed(session, job.id, per_minute=control_events_per_minute)
    if transition_job(session, job.id, JobStatus.paused, only_from=JobStatus.queued):
        events.append_control_event(session, job.id, JobControl.pause, "Job paused; resume it to queue it again")
    elif _set_pause_request(session, job.id, requested=True):
        _record_pause_request(session, job)
    session.refresh(job)
    if not _is_paused_or_pausing(job):
        raise InvalidTransition(_why_not_paused(job), param="fine_tuning_job_id")
    return job


def _is_paused_or_pausing(job: Job) -> bool:
    pausing = job.status == JobStatus.running.value and job.pause_requested_at is not None
    return job.status == JobStatus.paused.value or pausing


def _record_pause_request(session: Session, job: Job) -> None:
    """The event of a pause requested of a running job, naming the step the run had reported."""
    progress = job.progress or {}
    step, total = progress.get("step"), progress.get("total_steps")
    if isinstance(step, int) and isinstance(total, int):
        events.append_control_event(
            session,
            job.id,
            JobControl.pause,
            f"Pause requested at step {step} of {total}: the run will checkpoint after its current step and stop",
            data={"step": step, "total_steps": total},
        )
    else:
        events.append_control_event(
            session, job.id, JobControl.pause, "Pause requested: the run will checkpoint and stop"
        )


def _why_not_paused(job: Job) -> str:
    if JobStatus(job.status) in TERMINAL_STATUSES:
        return (
            f"Job {job.id} already ended ({job.status}), so it cannot be paused; only a queued or running job can be."
        )
    if job.status == JobStatus.validating_files.value:
        return f"Job {job.id} is still validating its files, so it cannot be paused yet; pause it once it is queued."
    # Queued or running now, but it moved between the read and the write (a worker took or handed it back).
    return f"Job {job.id} changed state while it was being paused (it is now {job.status}); send the pause again."


def resume_job(
    session: Session, tenant_id: str, job_id: str, *, quotas: TenantQuotas, control_events_per_minute: int | None = None
) -> tuple[Job, bool]:
    """Resume a job (OpenAI's `POST /resume`); returns (job, whether it must be sent to the queue). No commit.

    A paused job goes back to `queued` and continues from its newest checkpoint. A running job
    whose pause was requested but has not happened keeps running (the request is withdrawn).
    Any other job raises InvalidTransition; QuotaExceeded at the tenant's job limit, or when the
    job's control requests reached `control_events_per_minute`.
    """
    job = get_job(session, tenant_id, job_id)
    if job.status == JobStatus.paused.value:
        ensure_job_slot(session, tenant_id, quotas)
        events.ensure_control_allowed(session, job.id, per_minute=control_events_per_minute)
        if transition_job(
            session, job.id, JobStatus.queued, only_from=JobStatus.paused, values={"enqueued_at": utc_now()}
        ):
            events.append_control_event(session, job.id, JobControl.resume, "Job resumed and queued")
            session.refresh(job)
            return job, True
    elif job.status == JobStatus.running.value and job.pause_requested_at is not None:
        events.ensure_control_allowed(session, job.id, per_minute=control_events_per_minute)
        if _set_pause_request(session, job.id, requested=False):
            events.append_control_event(
                session, job.id, JobControl.resume, "Pause request withdrawn; the run continues"
            )
            session.refresh(job)
            return job, False
    session.refresh(job)
    raise InvalidTransition(_why_not_resumed(job), param="fine_tuning_job_id")


def _why_not_resumed(job: Job) -> str:
    if JobStatus(job.status) in TERMINAL_STATUSES:
        return (
            f"Job {job.id} already ended ({job.status}), so it cannot be resumed; only a paused job can be. "
            "Create a new job to train again."
        )
    if job.status == JobStatus.running.value:
        return f"Job {job.id} is running, not paused, and no pause is pending; there is nothing to resume."
    if job.status == JobStatus.paused.value:
        # Paused now, but it moved between the read and the write.
        return f"Job {job.id} changed state while it was being resumed (it is now paused); send the resume again."
    return (
        f"Job {job.id} is {job.status}, not paused; it starts by itself when a worker is free, so there is "
        "nothing to resume."
    )


def _set_pause_request(session: Session, job_id: str, *, requested: bool) -> bool:
    """Set or clear the pause request of a running job; False if it is not running, or already so."""
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status == JobStatus.running.value,
            Job.pause_requested_at.is_(None) if requested else Job.pause_requested_at.is_not(None),
        )
        .values(pause_requested_at=utc_now() if requested else None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


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
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


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
    session: Session, job_id: str, attempt: int, *, trained_tokens: int, result_files: list[str] | None = None
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


def fine_tuned_model_name(job: Job) -> str:
    return f"ft:{job.base_model_id}:{job.suffix or ''}:{job.id}"


def _usable_file(session: Session, tenant_id: str, file_id: str, param: str) -> File:
    try:
        row = get_file(session, tenant_id, file_id, for_update=True)
    except NotFound:
        raise InvalidRequest(
            f"{param}: you have no file {file_id!r}; upload it with POST /v1/files (purpose 'fine-tune') and pass "
            "the id that returns",
            param=param,
        ) from None
    if row.purpose != FilePurpose.fine_tune.value:
        raise InvalidRequest(
            f"{param}: file {file_id} has purpose {row.purpose!r}; upload your data with purpose 'fine-tune'",
            param=param,
        )
    if row.status == FileStatus.error.value:
        raise InvalidRequest(
            f"{param}: file {file_id} failed validation (GET /v1/files/{file_id} says why); fix the file and "
            "upload it again",
            param=param,
        )
    if row.status != FileStatus.processed.value:
        raise InvalidRequest(
            f"{param}: file {file_id} is still being validated; retry once its status is 'processed'", param=param
        )
    return row


def _training_labels(training: File) -> list[str | int]:
    labels = ordered_labels(training.label_counts, training.label_kind)
    if len(labels) < MIN_CLASSES:
        raise InvalidRequest(
            f"training_file: classification needs at least {MIN_CLASSES} labels, but file {training.id} has only "
            f"{labels!r}; add examples of another label",
            param="training_file",
        )
    return labels


_LABEL_KIND_WORDS = {"int": "integers", "str": "strings"}  # FileSummary.label_kind, in words


def _check_validation_matches_training(training: File, validation: File) -> None:
    if validation.has_text_pair != training.has_text_pair:
        has, lacks = ("validation", "training") if validation.has_text_pair else ("training", "validation")
        raise InvalidRequest(
            f"validation_file: the {has} file's records have 'text_pair' but the {lacks} file's do not; give "
            "'text_pair' in both files or in neither",
            param="validation_file",
        )
    if validation.label_kind != training.label_kind:
        raise InvalidRequest(
            f"validation_file: its labels are {_LABEL_KIND_WORDS.get(validation.label_kind, validation.label_kind)}, "
            f"but the training file's are {_LABEL_KIND_WORDS.get(training.label_kind, training.label_kind)}; use "
            "the same kind of label in both files",
            param="validation_file",
        )
    unknown = sorted(set(validation.label_counts) - set(training.label_counts))
    if unknown:
        raise InvalidRequest(
            f"validation_file: label {unknown[0]!r} does not occur in the training file; remove its examples from "
            "the validation file, or add examples of it to the training file",
            param="validation_file",
        )


def tenant_of(session: Session, job_id: str) -> str:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(_no_such_job(job_id), param="fine_tuning_job_id")
    return job.tenant_id


def list_fine_tuned_models(session: Session, tenant_id: str) -> list[Job]:
    """The tenant's succeeded jobs, oldest first: each one is a fine-tuned model."""
    return list(
        session.scalars(
            select(Job)
            .where(Job.tenant_id == tenant_id, Job.fine_tuned_model.is_not(None))
            .order_by(Job.finished_at, Job.id)
        )
    )


def get_fine_tuned_model(session: Session, tenant_id: str, name: str) -> Job:
    job = session.scalar(select(Job).where(Job.fine_tuned_model == name, Job.tenant_id == tenant_id))
    if job is None:
        raise NotFound(f"The model '{name}' does not exist; GET /v1/models lists the models you can use", param="model")
    return job
