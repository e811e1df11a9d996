"""job_freeze_plan: what trains in a running job's current epoch, unit by unit, for the dashboard's layer picture.

Revision ID: 9a4e6c1b2d73
Revises: 5f0c2a7d9b1e
Create Date: 2026-12-07 20:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9a4e6c1b2d73"
down_revision: str | None = "5f0c2a7d9b1e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("freeze_plan", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("freeze_plan")
