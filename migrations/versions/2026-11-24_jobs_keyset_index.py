"""jobs_keyset_index: the jobs list's index covers its whole sort key (tenant, created_at, id).

The list pages newest first by (created_at, id) after a cursor; with the id in the index, a deep
page starts at the cursor instead of reading every newer job of the tenant.

Revision ID: 8c1d2e3f4a5b
Revises: 7c1d2e9a4b10
Create Date: 2026-11-24 09:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "8c1d2e3f4a5b"
down_revision: str | None = "7c1d2e9a4b10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_tenant_created")
        batch_op.create_index("ix_jobs_tenant_created_id", ["tenant_id", "created_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_tenant_created_id")
        batch_op.create_index("ix_jobs_tenant_created", ["tenant_id", "created_at"], unique=False)
