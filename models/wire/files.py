"""The file object on the wire, with its purposes and statuses."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from models.storage.tables import File
from models.wire.common import unix_seconds


class FilePurpose(StrEnum):
    fine_tune = "fine-tune"
    fine_tune_results = "fine-tune-results"


class FileStatus(StrEnum):
    uploaded = "uploaded"
    processed = "processed"
    error = "error"


class FileRead(BaseModel):
    object: Literal["file"] = "file"
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: FileStatus
    status_details: str | None = None
    expires_at: int | None = None
    sha256: str
    format: str | None
    record_count: int
    label_counts: dict[str, int] = Field(
        default_factory=dict, description="A text-classification file's examples per label; {} for other tasks."
    )
    task_summaries: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="What validation found, per task whose format the file satisfies: its keys are the tasks "
        "the file can train.",
    )

    @classmethod
    def from_row(cls, row: File) -> FileRead:
        return cls(
            id=row.id,
            bytes=row.size_bytes,
            created_at=unix_seconds(row.created_at),
            filename=row.filename,
            purpose=row.purpose,
            status=FileStatus(row.status),
            status_details=row.status_details,
            sha256=row.sha256,
            format=row.data_format,
            record_count=row.record_count,
            label_counts=dict(row.task_summaries.get("text-classification", {}).get("label_counts", {})),
            task_summaries=dict(row.task_summaries),
        )


class FileDeleted(BaseModel):
    object: Literal["file"] = "file"
    id: str
    deleted: bool
