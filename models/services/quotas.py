"""Per-tenant quotas: each tenant's own limit where an administrator set one, else the service default."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.errors import InvalidRequest, PayloadTooLarge, QuotaExceeded
from models.services.storage_estimates import JobStorageEstimate
from models.settings import Settings
from models.states import TERMINAL_STATUSES, JobStatus
from models.storage.tables import Checkpoint, File, Job, ResultArtifact, Tenant

# Jobs that hold (or wait for) a worker. Paused jobs hold only their checkpoint, so they do not count.
ACTIVE_STATUSES = (JobStatus.validating_files.value, JobStatus.queued.value, JobStatus.running.value)
# Jobs whose checkpoints no longer count toward max_stored_bytes: their files are deleted when the job
# ends (by its run, or the next sweep), though a succeeded job's rows stay for its checkpoint list.
# Unfinished jobs' checkpoints count, paused ones' included.
ENDED_STATUSES = tuple(status.value for status in TERMINAL_STATUSES)
# What a tenant can do when its storage is full; there is no deleting fine-tuned weights through the API.
MAKE_ROOM = (
    "Delete files you no longer need, cancel paused jobs you will not resume (their checkpoints count), "
    "or ask an administrator for a larger quota"
)
# A job slot frees when a job ends; minutes, not seconds, is the honest hint for training jobs.
JOB_SLOT_RETRY_AFTER_SECONDS = 60


class Quota(StrEnum):
    """The limits an administrator sets per tenant: each is a `tenants` column and the error `param` naming it."""

    max_active_jobs = "max_active_jobs"
    max_stored_bytes = "max_stored_bytes"
    max_upload_bytes = "max_upload_bytes"


@dataclass(frozen=True)
class TenantQuotas:
    max_active_jobs: int
    max_stored_bytes: int
    max_upload_bytes: int

    @classmethod
    def of(cls, tenant: Tenant, settings: Settings) -> TenantQuotas:
        return cls(
            max_active_jobs=tenant.max_active_jobs or settings.tenant_max_active_jobs,
            max_stored_bytes=tenant.max_stored_bytes or settings.tenant_max_stored_bytes,
            max_upload_bytes=min(tenant.max_upload_bytes or settings.max_upload_bytes, settings.max_upload_bytes),
        )


def quotas_of(session: Session, tenant_id: str, settings: Settings) -> TenantQuotas:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise LookupError(f"tenant {tenant_id} does not exist")
    return TenantQuotas.of(tenant, settings)


def active_job_count(session: Session, tenant_id: str) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE_STATUSES))
        )
        or 0
    )


def ensure_job_slot(session: Session, tenant_id: str, quotas: TenantQuotas) -> None:
    """Raise QuotaExceeded (429) when the tenant already has `max_active_jobs` queued or running jobs.

    Call inside the transaction that adds the job. Two racing requests may both pass on PostgreSQL
    (read committed); the quota is a fairness limit, and one job over it is not a breach of safety.
    """
    active = active_job_count(session, tenant_id)
    if active >= quotas.max_active_jobs:
        raise QuotaExceeded(
            f"You have {active} queued or running fine-tuning jobs, the most your quota allows "
            f"(max_active_jobs={quotas.max_active_jobs}); retry when one of them ends.",
            param=Quota.max_active_jobs.value,
            retry_after_seconds=JOB_SLOT_RETRY_AFTER_SECONDS,
        )


def stored_bytes(session: Session, tenant_id: str) -> int:
    """Bytes the tenant keeps in the store: its files not deleted (uploads, result files), its weights
    archives, and the checkpoints of its jobs that have not ended (queued, running or paused). Reads only."""
    file_bytes = session.scalar(
        select(func.coalesce(func.sum(File.size_bytes), 0)).where(
            File.tenant_id == tenant_id, File.deleted_at.is_(None)
        )
    )
    weights_bytes = session.scalar(
        select(func.coalesce(func.sum(ResultArtifact.size_bytes), 0))
        .join(Job, Job.id == ResultArtifact.job_id)
        .where(Job.tenant_id == tenant_id)
    )
    checkpoint_bytes = session.scalar(
        select(func.coalesce(func.sum(Checkpoint.size_bytes), 0))
        .join(Job, Job.id == Checkpoint.job_id)
        .where(Job.tenant_id == tenant_id, Job.status.not_in(ENDED_STATUSES))
    )
    return int(file_bytes or 0) + int(weights_bytes or 0) + int(checkpoint_bytes or 0)


def ensure_room_for_job(
    session: Session, tenant_id: str, quotas: TenantQuotas, estimate: JobStorageEstimate | None
) -> None:
    """Raise PayloadTooLarge (413, `param` max_stored_bytes) when a new job's estimated peak storage
    does not fit the room left in the tenant's storage quota. Reads only.

    Without an estimate (the catalog has no parameter counts for the model) only a tenant already
    at its quota is refused: every job stores its weights. The room is what is stored now; the
    checkpoints the tenant's other unfinished jobs will still write are not reserved, so such a
    job may fail later with storage_quota_exceeded. Like ensure_job_slot, two racing requests may
    both pass on PostgreSQL; a fairness limit tolerates it.
    """
    in_store = stored_bytes(session, tenant_id)
    room = max(quotas.max_stored_bytes - in_store, 0)
    usage = (
        f"your storage quota is max_stored_bytes={quotas.max_stored_bytes} bytes, and your files, fine-tuned "
        f"weights and the checkpoints of unfinished jobs use {in_store} bytes"
    )
    if estimate is None:
        if room > 0:
            return
        raise PayloadTooLarge(
            f"No room for a fine-tuning job, which stores at least its fine-tuned weights: {usage}. "
            f"{MAKE_ROOM}; then retry.",
            param=Quota.max_stored_bytes.value,
        )
    if estimate.peak_bytes <= room:
        return
    raise PayloadTooLarge(
        f"This job would store about {estimate.peak_bytes} bytes at its peak ({estimate.describe()}), "
        f"but {usage}, which leaves {room}. {MAKE_ROOM}, or choose fewer epochs or a strategy that "
        "trains fewer parameters (partial, feature_extraction); then retry.",
        param=Quota.max_stored_bytes.value,
    )


class StorageQuotaExceeded(Exception):
    """What a run just stored took its tenant past max_stored_bytes: the run fails with storage_quota_exceeded."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def ensure_run_output_fits(
    session: Session, job_id: str, *, service_max_stored_bytes: int, output: str, size_bytes: int
) -> None:
    """Raise StorageQuotaExceeded when the tenant of `job_id` stores more than its max_stored_bytes,
    counting the rows this transaction added: call it after recording the run's `output` (named for
    the message, e.g. "the checkpoint at step 12", of `size_bytes`).

    The caller rolls the transaction back and deletes the output's files, so nothing past the
    quota is kept. `service_max_stored_bytes` applies where the tenant has no limit of its own.
    Two runs of one tenant recording at the same instant may both fit on PostgreSQL (read
    committed) and end one output over; like ensure_job_slot's, this is a fairness limit.
    Flushes; does not commit.
    """
    job = session.get(Job, job_id)
    if job is None:
        raise LookupError(f"job {job_id} does not exist")
    tenant = session.get(Tenant, job.tenant_id)
    limit = (tenant.max_stored_bytes if tenant else None) or service_max_stored_bytes
    session.flush()
    in_store = stored_bytes(session, job.tenant_id)
    if in_store <= limit:
        return
    raise StorageQuotaExceeded(
        f"storage quota exceeded: {output} ({size_bytes} bytes) would bring what you store to {in_store} bytes, "
        f"past your storage quota (max_stored_bytes={limit} bytes; files, fine-tuned weights and the "
        f"checkpoints of unfinished jobs count). It was deleted, and so were the job's checkpoints. {MAKE_ROOM}; "
        "then create the job again (fewer epochs or a strategy that trains fewer parameters stores less)."
    )


@dataclass(frozen=True)
class UploadCap:
    """The most bytes one upload may have, and the quota that sets it: whichever of the two is smaller."""

    max_file_bytes: int
    quota: Quota
    limit: int
    stored_bytes: int = 0

    def refusal(self) -> PayloadTooLarge:
        """The 413 for an upload over this cap, naming the quota, its limit and (for storage) the usage."""
        if self.quota is Quota.max_stored_bytes:
            return PayloadTooLarge(
                f"file: storing it would take you past your storage quota (max_stored_bytes={self.limit} bytes); "
                f"your files, fine-tuned weights and the checkpoints of unfinished jobs use {self.stored_bytes} "
                f"bytes, so at most {self.max_file_bytes} more fit. {MAKE_ROOM}; then retry.",
                param=Quota.max_stored_bytes.value,
            )
        # `param` stays the form field: the file itself is at fault, whatever the tenant stores.
        return PayloadTooLarge(
            f"file: larger than the upload limit of {self.limit} bytes (max_upload_bytes)",
            param="file",
        )


def service_upload_cap(settings: Settings) -> UploadCap:
    """The service-wide cap, which holds before the caller is known; a tenant's own cap is never above it."""
    return UploadCap(settings.max_upload_bytes, Quota.max_upload_bytes, settings.max_upload_bytes)


def upload_cap(session: Session, tenant_id: str, quotas: TenantQuotas) -> UploadCap:
    """The tenant's cap now: min(its upload limit, the room left in its storage quota). Reads only."""
    in_store = stored_bytes(session, tenant_id)
    room = max(quotas.max_stored_bytes - in_store, 0)
    if room < quotas.max_upload_bytes:
        return UploadCap(room, Quota.max_stored_bytes, quotas.max_stored_bytes, in_store)
    return UploadCap(quotas.max_upload_bytes, Quota.max_upload_bytes, quotas.max_upload_bytes, in_store)


def ensure_room_for_upload(session: Session, tenant_id: str, quotas: TenantQuotas, size_bytes: int) -> None:
    """Raise PayloadTooLarge (413) when a received upload of `size_bytes` does not fit the tenant's caps.

    Call inside the transaction that adds the file row: the stream was capped when it began, and
    this check sees the uploads that finished meanwhile (SQLite serialises the two; on PostgreSQL
    two racing uploads may both fit, which a fairness limit tolerates).
    """
    cap = upload_cap(session, tenant_id, quotas)
    if size_bytes > cap.max_file_bytes:
        raise cap.refusal()


def set_tenant_quota(session: Session, tenant: Tenant, quota: Quota, limit: int | None) -> None:
    """Give `tenant` its own limit for `quota`; None returns it to the service default. Does not commit.

    Raises InvalidRequest for a limit below 1. A per-tenant `max_upload_bytes` above the service-wide
    one is stored but has no effect until the service-wide limit rises.
    """
    if limit is not None and limit < 1:
        raise InvalidRequest(f"{quota.value} must be at least 1 (got {limit})", param=quota.value)
    setattr(tenant, quota.value, limit)
    session.flush()


@dataclass(frozen=True)
class QuotaUsage:
    """One line of a tenant's quota report. `own_limit` None means the service default applies."""

    quota: Quota
    limit: int
    own_limit: int | None
    in_use: int | None  # None for max_upload_bytes: a per-upload cap, nothing accumulates


def quota_usage(session: Session, tenant: Tenant, settings: Settings) -> list[QuotaUsage]:
    """Each quota's effective limit, the tenant's own setting and what the tenant uses now. Reads only."""
    quotas = TenantQuotas.of(tenant, settings)
    return [
        QuotaUsage(
            Quota.max_active_jobs, quotas.max_active_jobs, tenant.max_active_jobs, active_job_count(session, tenant.id)
        ),
        QuotaUsage(
            Quota.max_stored_bytes, quotas.max_stored_bytes, tenant.max_stored_bytes, stored_bytes(session, tenant.id)
        ),
        QuotaUsage(Quota.max_upload_bytes, quotas.max_upload_bytes, tenant.max_upload_bytes, None),
    ]
