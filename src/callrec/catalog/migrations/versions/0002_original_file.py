"""Imported recordings keep their original file: its path and SHA-256.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(sa.Column("original_path", sa.String(), nullable=True))
        batch.add_column(sa.Column("original_sha256", sa.String(length=64), nullable=True))
        batch.create_index(op.f("ix_recordings_original_sha256"), ["original_sha256"])


def downgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.drop_index(op.f("ix_recordings_original_sha256"))
        batch.drop_column("original_sha256")
        batch.drop_column("original_path")
