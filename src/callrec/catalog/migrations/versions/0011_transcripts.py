"""Transcripts (issue 18): the words said in a recording, and a searchable text of them.

``transcripts`` has one row per transcribed recording (engine, language, the words joined
as text for search); ``transcript_words`` one row per word (channel, speaker, start, end,
confidence). Deleting the recording deletes both. The full-text index of ``transcripts.text``
(SQLite FTS5, PostgreSQL GIN over a ``simple`` tsvector) lives outside the ORM models:
:mod:`callrec.catalog.transcripts` creates it.

Revision ID: 0011
Revises: 0010

Plain SQL types only (no callrec TypeDecorators), as in 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from callrec.catalog import transcripts

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "transcripts",
        sa.Column("recording_id", sa.Integer(), nullable=False),
        sa.Column("engine", sa.String(), nullable=False),
        sa.Column("language", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("audio_seconds", sa.Float(), nullable=False),
        sa.Column("elapsed_seconds", sa.Float(), nullable=False),
        sa.Column("text", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
            name=op.f("fk_transcripts_recording_id_recordings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("recording_id", name=op.f("pk_transcripts")),
    )
    op.create_table(
        "transcript_words",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("recording_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.Integer(), nullable=False),
        sa.Column("speaker", sa.String(), nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("word", sa.String(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
            name=op.f("fk_transcript_words_recording_id_recordings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcript_words")),
    )
    with op.batch_alter_table("transcript_words") as batch:
        batch.create_index(
            op.f("ix_transcript_words_recording_id_start"), ["recording_id", "start"]
        )
    transcripts.create_index(op.get_bind())


def downgrade() -> None:
    transcripts.drop_index(op.get_bind())
    op.drop_table("transcript_words")
    op.drop_table("transcripts")
