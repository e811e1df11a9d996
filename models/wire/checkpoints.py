"""The job checkpoint object on the wire."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
)

from models.storage.tables import Checkpoint
from models.wire.common import unix_seconds


class CheckpointRead(BaseModel):
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, float]
    step_number: int
    epoch: int

    @classmethod
    def from_row(cls, row: Checkpoint, model_name: str) -> CheckpointRead:
        return cls(
            id=row.id,
            created_at=unix_seconds(row.created_at),
            fine_tuned_model_checkpoint=model_name,
            fine_tuning_job_id=row.job_id,
            metrics=dict(row.metrics),
            step_number=row.step,
            epoch=row.epoch,
        )
