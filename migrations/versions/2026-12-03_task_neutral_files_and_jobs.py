"""task_neutral_files_and_jobs: task-specific file and job columns move into per-task JSON; jobs get best_checkpoint.

A file's text-classification facts (label counts, label kind, text pairs) become its
`task_summaries["text-classification"]`; a job's `label_names` become `task_settings["labels"]`;
stored strategies lose the knobs of other strategy types (they were written as nulls).

Revision ID: 5f0c2a7d9b1e
Revises: abcdf98dace8
Create Date: 2026-12-03 15:30:00.000000
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "5f0c2a7d9b1e"
down_revision: str | None = "abcdf98dace8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TEXT_CLASSIFICATION = "text-classification"


def _loaded(value: Any) -> Any:
    """A JSON column's value as read through a plain table (a string on SQLite, decoded on PostgreSQL)."""
    return json.loads(value) if isinstance(value, str) else value


def upgrade() -> None:
    files = sa.table(
        "files",
        sa.column("id", sa.String),
        sa.column("purpose", sa.String),
        sa.column("record_count", sa.Integer),
        sa.column("has_text_pair", sa.Boolean),
        sa.column("label_kind", sa.String),
        sa.column("label_counts", sa.JSON),
        sa.column("task_summaries", sa.JSON),
    )
    jobs = sa.table(
        "jobs",
        sa.column("id", sa.String),
        sa.column("label_names", sa.JSON),
        sa.column("strategy", sa.JSON),
        sa.column("task_settings", sa.JSON),
    )
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("task_summaries", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("task_settings", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("best_checkpoint", sa.JSON(), nullable=True))

    connection = op.get_bind()
    for file_id, purpose, records, has_pair, kind, counts in connection.execute(
        sa.select(
            files.c.id,
            files.c.purpose,
            files.c.record_count,
            files.c.has_text_pair,
            files.c.label_kind,
            files.c.label_counts,
        )
    ):
        if purpose != "fine-tune":
            continue  # result files (metrics CSVs) hold no training data
        summary = {
            "record_count": records,
            "label_counts": _loaded(counts) or {},
            "label_kind": kind,
            "has_text_pair": bool(has_pair),
        }
        connection.execute(
            files.update().where(files.c.id == file_id).values(task_summaries={TEXT_CLASSIFICATION: summary})
        )
    for job_id, labels, strategy in connection.execute(sa.select(jobs.c.id, jobs.c.label_names, jobs.c.strategy)):
        kept = {key: value for key, value in (_loaded(strategy) or {}).items() if value is not None}
        connection.execute(
            jobs.update()
            .where(jobs.c.id == job_id)
            .values(task_settings={"labels": _loaded(labels) or []}, strategy=kept)
        )

    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_column("label_counts")
        batch_op.drop_column("label_kind")
        batch_op.drop_column("has_text_pair")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("label_names")


def downgrade() -> None:
    files = sa.table(
        "files",
        sa.column("id", sa.String),
        sa.column("has_text_pair", sa.Boolean),
        sa.column("label_kind", sa.String),
        sa.column("label_counts", sa.JSON),
        sa.column("task_summaries", sa.JSON),
    )
    jobs = sa.table(
        "jobs",
        sa.column("id", sa.String),
        sa.column("label_names", sa.JSON),
        sa.column("task_settings", sa.JSON),
    )
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("has_text_pair", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("label_kind", sa.String(8), nullable=False, server_default="str"))
        batch_op.add_column(sa.Column("label_counts", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("label_names", sa.JSON(), nullable=False, server_default="[]"))

    connection = op.get_bind()
    for file_id, summaries in connection.execute(sa.select(files.c.id, files.c.task_summaries)):
        summary = (_loaded(summaries) or {}).get(TEXT_CLASSIFICATION, {})
        connection.execute(
            files.update()
            .where(files.c.id == file_id)
            .values(
                has_text_pair=bool(summary.get("has_text_pair", False)),
                label_kind=summary.get("label_kind", "str"),
                label_counts=summary.get("label_counts", {}),
            )
        )
    for job_id, settings in connection.execute(sa.select(jobs.c.id, jobs.c.task_settings)):
        connection.execute(
            jobs.update().where(jobs.c.id == job_id).values(label_names=(_loaded(settings) or {}).get("labels", []))
        )

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("best_checkpoint")
        batch_op.drop_column("task_settings")
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_column("task_summaries")
