"""The model object on the wire: a base model or a fine-tuned one."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
)

from models.storage.tables import BaseModel as BaseModelRow
from models.storage.tables import Job
from models.wire.common import unix_seconds


class ModelRead(BaseModel):
    object: Literal["model"] = "model"
    id: str
    created: int
    owned_by: str
    num_layers: int | None = None
    fine_tuning_job_id: str | None = None

    @classmethod
    def from_base_model(cls, row: BaseModelRow) -> ModelRead:
        return cls(id=row.id, created=unix_seconds(row.created_at), owned_by="graft", num_layers=row.num_layers)

    @classmethod
    def from_fine_tuned_job(cls, job: Job) -> ModelRead:
        assert job.fine_tuned_model is not None
        return cls(
            id=job.fine_tuned_model,
            created=unix_seconds(job.finished_at or job.created_at),
            owned_by=job.tenant_id,
            fine_tuning_job_id=job.id,
        )
