"""The file object on the wire, with its purposes and statuses."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import (
    BaseModel,
)

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
    label_counts: dict[str, int]

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
            label_counts=dict(row.label_counts),
        )


class FileDeleted(BaseModel):
    object: Literal["file"] = "file"
    id: str
    deleted: bool
