"""Fine-tuning jobs as users see them: creation rules, reads, lists, and the pause, resume and cancel actions."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session

from models.architectures import is_known_architecture
from models.errors import InvalidFile, InvalidRequest, InvalidTransition, NotFound
from models.hyperparameters import ResolvedHyperparameters
from models.ids import IdPrefix, is_well_formed, new_id
from models.services import catalog, events
from models.services.events import JobControl
from models.services.files import get_file, record_task_summary
from models.services.job_settings import resolve_hyperparameters
from models.services.quotas import TenantQuotas, ensure_job_slot, ensure_room_for_job
from models.services.runs import transition_job
from models.services.storage_estimates import JobStorageEstimate, estimate_job_storage
from models.states import TERMINAL_STATUSES, JobStatus
from models.storage.blobs import ArtifactStore
from models.storage.tables import BaseModel, File, Job, utc_now
from models.strategies.common import StrategySpecBase
from models.strategies.names import StrategyType
from models.tasks.names import Task
from models.tasks.registry import task_format
from models.tasks.text_classification import DataFormat, DataLimits
from models.wire.files import FilePurpose, FileStatus
from models.wire.jobs import JobCreate


@dataclass(frozen=True)
class JobPlan:
    """What a create request resolves to before anything is stored: every "auto" filled in."""

    base_model: BaseModel
    training: File
    validation: File | None
    task_settings: dict[str, Any]
    strategy: StrategySpecBase
    hyperparameters: ResolvedHyperparameters
    training_description: str
    storage: JobStorageEstimate | None  # None when the catalog has no parameter counts for the model


def plan_job(session: Session, tenant_id: str, spec: JobCreate, *, store: ArtifactStore, limits: DataLimits) -> JobPlan:
    """Check a request against the catalog and the files, and resolve what the job would train with.

    Raises InvalidRequest naming the field at fault (InvalidFile naming the file's line). May
    remember a file's validation for the job's task (files.record_task_summary); does not commit.
    """
    try:
        base_model = catalog.get_base_model(session, spec.model)
    except NotFound as error:
        raise InvalidRequest(error.message, param="model") from None
    training = _usable_file(session, tenant_id, spec.training_file, "training_file")
    validation = (
        _usable_file(session, tenant_id, spec.validation_file, "validation_file") if spec.validation_file else None
    )
    rules = task_format(spec.task)
    training_summary = _summary_for_task(training, spec.task, "training_file", store, limits)
    validation_summary = (
        _summary_for_task(validation, spec.task, "validation_file", store, limits) if validation else None
    )
    task_settings = rules.job_settings(training_summary, validation_summary)
    if spec.strategy.needs_layers and not is_known_architecture(base_model.model_type):
        raise InvalidRequest(
            f"strategy.type: '{spec.strategy.type_name()}' freezes or paces the model's layers, and the engine does "
            f"not know where the layers of a '{base_model.model_type}' model are; use strategy type 'full'",
            param="strategy.type",
        )
    strategy = spec.strategy.resolved(base_model.num_layers)
    hyperparameters = resolve_hyperparameters(
        spec.requested_hyperparameters(),
        rules.defaults(StrategyType(strategy.type_name())) or strategy.defaults,
        training_records=int(training_summary["record_count"]),
        model_max_length=base_model.max_sequence_length,
        metrics=rules.metrics,
        has_validation_file=validation is not None,
    )
    return JobPlan(
        base_model=base_model,
        training=training,
        validation=validation,
        task_settings=task_settings,
        strategy=strategy,
        hyperparameters=hyperparameters,
        training_description=rules.describe(training_summary),
        storage=estimate_job_storage(base_model, strategy, hyperparameters),
    )


def create_job(
    session: Session,
    tenant_id: str,
    spec: JobCreate,
    *,
    quotas: TenantQuotas,
    store: ArtifactStore,
    limits: DataLimits,
) -> Job:
    """Validate a request (plan_job), check the tenant's quotas, and insert the job as `queued`.

    Every "auto" is resolved here, so the job row records the values training will use.
    Raises InvalidRequest naming the field at fault, QuotaExceeded at the tenant's job limit,
    PayloadTooLarge (`param` max_stored_bytes) when the job's estimated storage does not fit.
    Does not commit.
    """
    ensure_job_slot(session, tenant_id, quotas)
    plan = plan_job(session, tenant_id, spec, store=store, limits=limits)
    ensure_room_for_job(session, tenant_id, quotas, plan.storage)
    job = Job(
        id=new_id(IdPrefix.job),
        tenant_id=tenant_id,
        base_model_id=plan.base_model.id,
        training_file_id=plan.training.id,
        validation_file_id=plan.validation.id if plan.validation else None,
        task=spec.task.value,
        strategy=plan.strategy.model_dump(mode="json"),
        hyperparameters=plan.hyperparameters.as_dict(),
        task_settings=plan.task_settings,
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
        f"Validated training file {plan.training.id} for {spec.task.value}: {plan.training_description}",
    )
    events.append_event(session, job.id, "Job queued")
    return job


def no_such_job_message(job_id: str) -> str:
    return f"No fine-tuning job {job_id} exists for your API key; check the id (GET /v1/fine_tuning/jobs lists yours)"


def get_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """The tenant's job; another tenant's job is NotFound, exactly like a missing one."""
    job = session.get(Job, job_id) if is_well_formed(job_id, IdPrefix.job) else None
    if job is None or job.tenant_id != tenant_id:
        raise NotFound(no_such_job_message(job_id), param="fine_tuning_job_id")
    return job


def list_jobs(
    session: Session,
    tenant_id: str,
    *,
    after: str | None,
    limit: int,
    metadata: dict[str, str] | None = None,
    statuses: frozenset[JobStatus] | None = None,
) -> tuple[list[Job], bool]:
    """Newest first, of `statuses` only when given; `after` is the last job id of the previous page.

    Returns (jobs, has_more).
    """
    query = select(Job).where(Job.tenant_id == tenant_id)
    if statuses:
        query = query.where(Job.status.in_(sorted(status.value for status in statuses)))
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


def _summary_for_task(file: File, task: Task, param: str, store: ArtifactStore, limits: DataLimits) -> dict[str, Any]:
    """What the file holds for `task`: recorded at upload, or found now by validating it for this task
    (OpenAI's `validating_files`), with the same line-numbered faults an upload gets."""
    summary = file.task_summaries.get(task.value)
    if summary is not None:
        return dict(summary)
    if file.data_format is None:
        raise InvalidRequest(f"{param}: file {file.id} holds no training data", param=param)
    try:
        summary = task_format(task).summarize(store.path(file.blob_key), DataFormat(file.data_format), limits)
    except InvalidFile as fault:
        raise InvalidRequest(
            f"{param}: file {file.id} does not hold {task.value} data: {fault.message}", param=param
        ) from None
    record_task_summary(file, task, summary)
    return summary


def tenant_of(session: Session, job_id: str) -> str:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(no_such_job_message(job_id), param="fine_tuning_job_id")
    return job.tenant_id
