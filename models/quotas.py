"""Per-tenant quotas: each tenant's own limit where an administrator set one, else the service default."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.errors import QuotaExceeded
from models.settings import Settings
from models.states import JobStatus
from models.tables import Job, Tenant

# Jobs that hold (or wait for) a worker. Paused jobs hold only their checkpoint, so they do not count.
ACTIVE_STATUSES = (JobStatus.validating_files.value, JobStatus.queued.value, JobStatus.running.value)
# A job slot frees when a job ends; minutes, not seconds, is the honest hint for training jobs.
JOB_SLOT_RETRY_AFTER_SECONDS = 60


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
            param="max_active_jobs",
            retry_after_seconds=JOB_SLOT_RETRY_AFTER_SECONDS,
        )
