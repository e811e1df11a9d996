"""stored_bytes_of_checkpoints: each checkpoint's size, and each base model's parameter counts, for the storage quota.

Revision ID: abcdf98dace8
Revises: 3e7b91c04d2a
Create Date: 2026-12-03 14:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "abcdf98dace8"
down_revision: str | None = "3e7b91c04d2a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Checkpoints written before this revision count as 0 bytes: their size was never recorded.
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("size_bytes", sa.BigInteger(), nullable=False, server_default="0"))

    # Filled when a model is registered (again); `graft migrate` registers the default model again.
    with op.batch_alter_table("base_models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("embedding_parameters", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("layer_parameters", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("top_parameters", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("base_models", schema=None) as batch_op:
        batch_op.drop_column("top_parameters")
        batch_op.drop_column("layer_parameters")
        batch_op.drop_column("embedding_parameters")

    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_column("size_bytes")
