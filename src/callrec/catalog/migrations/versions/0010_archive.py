"""Archive copies of recordings (issue 16, part 4): FLAC or Opus instead of the WAV.

One row per recording an archive run touched: its claim, what the WAV was (path, size,
SHA-256), what the archive is, and when. Deleting the recording deletes its row.

Revision ID: 0010
Revises: 0009

Plain SQL types only (no callrec TypeDecorators), as in 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "recording_archives",
        sa.Column("recording_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("format", sa.String(), nullable=False),
        sa.Column("claimed_by", sa.String(), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("wav_path", sa.String(), nullable=False),
        sa.Column("wav_size", sa.BigInteger(), nullable=True),
        sa.Column("wav_sha256", sa.String(length=64), nullable=True),
        sa.Column("frames", sa.BigInteger(), nullable=True),
        sa.Column("archive_path", sa.String(), nullable=True),
        sa.Column("archive_size", sa.BigInteger(), nullable=True),
        sa.Column("archive_sha256", sa.String(length=64), nullable=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
            name=op.f("fk_recording_archives_recording_id_recordings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("recording_id", name=op.f("pk_recording_archives")),
    )
    with op.batch_alter_table("recording_archives") as batch:
        batch.create_index(op.f("ix_recording_archives_state"), ["state"])


def downgrade() -> None:
    op.drop_table("recording_archives")
