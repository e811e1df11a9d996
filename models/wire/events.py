"""The job event object on the wire."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
)

from models.storage.tables import JobEvent
from models.wire.common import unix_seconds


class EventRead(BaseModel):
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    id: str
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"]

    @classmethod
    def from_row(cls, row: JobEvent) -> EventRead:
        return cls(
            id=row.id,
            created_at=unix_seconds(row.created_at),
            level=row.level,  # type: ignore[arg-type]
            message=row.message,
            data=row.data,
            type=row.event_type,  # type: ignore[arg-type]
        )
