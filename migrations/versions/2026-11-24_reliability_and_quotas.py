"""reliability_and_quotas: lost-run count, enqueue time and pause request on jobs; checkpoint kinds;
tenant quotas.

Revision ID: 603907f93f76
Revises: 5f2a08432982
Create Date: 2026-11-24 05:06:08.832832
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "603907f93f76"
down_revision: str | None = "5f2a08432982"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="epoch"))

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lost_runs", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("pause_requested_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_active_jobs", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_stored_bytes", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("max_upload_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("max_upload_bytes")
        batch_op.drop_column("max_stored_bytes")
        batch_op.drop_column("max_active_jobs")

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("pause_requested_at")
        batch_op.drop_column("enqueued_at")
        batch_op.drop_column("lost_runs")

    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_column("kind")
