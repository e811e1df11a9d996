"""A succeeded job's published outputs: recorded once, looked up for download."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.errors import NotFound
from models.ids import IdPrefix, new_id
from models.storage.tables import Job, ResultArtifact


class ArtifactKind(StrEnum):
    weights_archive = "weights_archive"


def record_artifact(
    session: Session, job_id: str, *, kind: ArtifactKind, blob_key: str, size_bytes: int, sha256: str
) -> ResultArtifact:
    """Insert the row of an artifact whose blob is already published. Does not commit."""
    row = ResultArtifact(
        id=new_id(IdPrefix.artifact),
        job_id=job_id,
        kind=kind.value,
        blob_key=blob_key,
        size_bytes=size_bytes,
        sha256=sha256,
    )
    session.add(row)
    return row


def get_weights_artifact(session: Session, job: Job) -> ResultArtifact:
    """The downloadable weights of a succeeded job; NotFound while the job has none."""
    row = session.scalar(
        select(ResultArtifact).where(
            ResultArtifact.job_id == job.id, ResultArtifact.kind == ArtifactKind.weights_archive.value
        )
    )
    if row is None:
        raise NotFound(f"Job {job.id} has no weights (status: {job.status})", param="fine_tuning_job_id")
    return row
