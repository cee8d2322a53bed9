"""The object storage tier (issue 17 part 1): which files of a recording are in the store.

One row per file uploaded and verified (read back, SHA-256 matched): its key, size and hash,
when, and when the local copy was removed. ``recording_id`` becomes NULL when the recording
is deleted (its objects are then deleted from the store by the storage sweep).

Revision ID: 0012
Revises: 0011

Plain SQL types only (no callrec TypeDecorators), as in 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "recording_objects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("recording_id", sa.Integer(), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("local_removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
            name=op.f("fk_recording_objects_recording_id_recordings"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recording_objects")),
        sa.UniqueConstraint("key", name=op.f("uq_recording_objects_key")),
    )
    with op.batch_alter_table("recording_objects") as batch:
        batch.create_index(op.f("ix_recording_objects_recording_id_path"), ["recording_id", "path"])
        batch.create_index(
            op.f("ix_recording_objects_local_removed_at_uploaded_at"),
            ["local_removed_at", "uploaded_at"],
        )


def downgrade() -> None:
    op.drop_table("recording_objects")
