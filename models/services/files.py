"""Uploaded files: validated before they become visible, owned by one tenant, deleted only when unused."""

from __future__ import annotations

import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.errors import InvalidFile, InvalidRequest, InvalidTransition, NotFound
from models.ids import IdPrefix, is_well_formed, new_id
from models.services.quotas import TenantQuotas, ensure_room_for_upload
from models.states import TERMINAL_STATUSES
from models.storage.blob_keys import file_blob_key
from models.storage.blobs import ArtifactStore
from models.storage.tables import File, Job, utc_now
from models.tasks.names import Task
from models.tasks.registry import summarize_upload
from models.tasks.text_classification import DataFormat, DataLimits, detect_format
from models.unicode_text import strip_format_characters, unpaired_surrogate
from models.wire.files import FilePurpose, FileStatus

MAX_FILENAME_CHARS = 255


def clean_filename(raw: str | None) -> str:
    """The display name of an upload: its last path component, never used to build a path.

    Format characters (Unicode category Cf: the bidirectional controls U+202A–U+202E, U+2066–U+2069,
    U+200E, U+200F, U+061C, zero-width characters) are removed: they change only how a name
    displays (`evil`, U+202E, `gnp.exe` shows as `evilexe.png`), so the stored name shows as what it is,
    and an upload named by a file system that allows them still succeeds. Raises InvalidRequest
    for control characters, which no honest client sends, and for a name that is not valid Unicode.
    """
    if not raw:
        return "upload"
    if any(unicodedata.category(char) == "Cc" for char in raw):
        raise InvalidRequest(
            "file: the filename contains control characters; rename the file without them", param="file"
        )
    surrogate = unpaired_surrogate(raw)
    if surrogate is not None:
        raise InvalidRequest(
            f"file: the filename is not valid Unicode (an unpaired surrogate {surrogate}); rename the file",
            param="file",
        )
    name = PureWindowsPath(PurePosixPath(strip_format_characters(raw)).name).name.strip()
    if name in ("", ".", ".."):
        return "upload"
    return name[:MAX_FILENAME_CHARS]


def parse_purpose(raw: str | None) -> FilePurpose:
    """The upload's purpose; only `fine-tune` may be uploaded (`fine-tune-results` files are the server's)."""
    expected = FilePurpose.fine_tune.value
    if raw is None:
        raise InvalidRequest(f"purpose: missing; send purpose={expected} with the file", param="purpose")
    if raw != expected:
        shown = repr(raw[:40]) if len(raw) <= 40 else f"{raw[:40]!r}…"
        raise InvalidRequest(f"purpose: {shown} is not accepted; send purpose={expected}", param="purpose")
    return FilePurpose.fine_tune


def create_file(
    session: Session,
    store: ArtifactStore,
    *,
    tenant_id: str,
    filename: str,
    purpose: FilePurpose,
    uploaded_path: Path,
    size_bytes: int,
    sha256: str,
    quotas: TenantQuotas,
    limits: DataLimits,
) -> File:
    """Validate a fully received upload, publish its blob and insert its row as `processed`.

    `uploaded_path` is a temporary file inside the store; on any error it is removed and nothing is
    published. `limits` bound the file's labels. Raises InvalidFile naming the offending line,
    PayloadTooLarge when the file no longer fits the tenant's storage quota. Does not commit.
    """
    try:
        if size_bytes == 0:
            raise InvalidFile(
                "file is empty; upload a JSONL file (one JSON object per line) or a CSV file with a header",
                param="file",
            )
        with uploaded_path.open("rb") as handle:
            first_bytes = handle.read(64)
        data_format = detect_format(filename, first_bytes)
        summaries = summarize_upload(uploaded_path, data_format, limits)
        # After validating, which reads no rows: the check opens the transaction (on SQLite the write lock).
        ensure_room_for_upload(session, tenant_id, quotas, size_bytes)
        file_id = new_id(IdPrefix.file)
        blob_key = file_blob_key(tenant_id, file_id)
        store.publish(uploaded_path, blob_key)
    finally:
        uploaded_path.unlink(missing_ok=True)
    row = _file_row(file_id, tenant_id, filename, purpose, size_bytes, sha256, blob_key, data_format, summaries)
    session.add(row)
    session.flush()
    return row


def create_result_file(
    session: Session, *, tenant_id: str, job_id: str, blob_key: str, size_bytes: int, sha256: str, record_count: int
) -> File:
    """The row of a job's metrics CSV (purpose `fine-tune-results`), whose blob is already published."""
    row = File(
        id=new_id(IdPrefix.file),
        tenant_id=tenant_id,
        filename=f"{job_id}-results.csv",
        purpose=FilePurpose.fine_tune_results.value,
        size_bytes=size_bytes,
        sha256=sha256,
        status=FileStatus.processed.value,
        blob_key=blob_key,
        data_format="csv",
        record_count=record_count,
    )
    session.add(row)
    session.flush()
    return row


def get_file(session: Session, tenant_id: str, file_id: str, *, for_update: bool = False) -> File:
    """The tenant's live file; another tenant's or a deleted file is NotFound, exactly like a missing one.

    `for_update` locks the row until the transaction ends (PostgreSQL), so creating a job that uses
    the file and deleting the file serialise; SQLite's BEGIN IMMEDIATE serialises them already.
    """
    row = session.get(File, file_id, with_for_update=for_update) if is_well_formed(file_id, IdPrefix.file) else None
    if row is None or row.tenant_id != tenant_id or row.deleted_at is not None:
        raise NotFound(f"No such File object: {file_id}", param="file_id")
    return row


def list_files(
    session: Session, tenant_id: str, *, after: str | None, limit: int, purpose: str | None
) -> tuple[list[File], bool]:
    """Newest first; returns (files, has_more)."""
    query = select(File).where(File.tenant_id == tenant_id, File.deleted_at.is_(None))
    if purpose is not None:
        query = query.where(File.purpose == purpose)
    if after is not None:
        cursor = get_file_for_cursor(session, tenant_id, after)
        query = query.where(
            (File.created_at < cursor.created_at) | ((File.created_at == cursor.created_at) & (File.id < cursor.id))
        )
    rows = list(session.scalars(query.order_by(File.created_at.desc(), File.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def get_file_for_cursor(session: Session, tenant_id: str, after: str) -> File:
    try:
        return get_file(session, tenant_id, after)
    except NotFound:
        raise InvalidRequest(
            f"after: {after!r} is not one of your files; pass the id of the last file of the previous page",
            param="after",
        ) from None


def stored_sha256s(session: Session) -> set[str]:
    """The content hashes of every file not deleted: data derived from any other may be purged."""
    return set(session.scalars(select(File.sha256).where(File.deleted_at.is_(None)).distinct()))


def delete_file(session: Session, tenant_id: str, file_id: str) -> File:
    """Mark a file deleted, which frees its bytes in the storage quota. Does not commit.

    Raises InvalidTransition while an unfinished job still needs it. The caller removes the blob
    after committing, so a failed commit never loses content.
    """
    row = get_file(session, tenant_id, file_id, for_update=True)
    users = session.scalars(
        select(Job.id).where(
            (Job.training_file_id == row.id) | (Job.validation_file_id == row.id),
            Job.status.not_in([status.value for status in TERMINAL_STATUSES]),
        )
    ).all()
    if users:
        raise InvalidTransition(
            f"file {file_id} is used by unfinished job {users[0]}; cancel it or wait for it to end",
            param="file_id",
        )
    row.deleted_at = utc_now()
    return row


def _file_row(
    file_id: str,
    tenant_id: str,
    filename: str,
    purpose: FilePurpose,
    size_bytes: int,
    sha256: str,
    blob_key: str,
    data_format: DataFormat,
    summaries: dict[str, dict[str, Any]],
) -> File:
    return File(
        id=file_id,
        tenant_id=tenant_id,
        filename=filename,
        purpose=purpose.value,
        size_bytes=size_bytes,
        sha256=sha256,
        status=FileStatus.processed.value,
        blob_key=blob_key,
        data_format=data_format.value,
        record_count=max(int(summary["record_count"]) for summary in summaries.values()),
        task_summaries=summaries,
    )


def record_task_summary(file: File, task: Task, summary: dict[str, Any]) -> None:
    """Keep what validating the file for another task learned, so the next job of that task reads it. No commit."""
    file.task_summaries = {**file.task_summaries, task.value: summary}
