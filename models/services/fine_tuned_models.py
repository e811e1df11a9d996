"""Fine-tuned models: the name a succeeded job's model gets, and the tenant's models by that name."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.errors import NotFound
from models.storage.tables import Job


def fine_tuned_model_name(job: Job) -> str:
    return f"ft:{job.base_model_id}:{job.suffix or ''}:{job.id}"


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
