"""The recordings table.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Plain SQL types only (no callrec TypeDecorators): a migration must keep working when the
models change later.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(), nullable=nullable)


def _utc(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _counter(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "recordings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _text("source"),
        _text("session_id"),
        _text("device"),
        _text("direction"),
        _text("local_number"),
        _text("local_name"),
        _text("remote_number"),
        _text("remote_name"),
        _text("codec"),
        _text("peer_address"),
        sa.Column("peer_port", sa.Integer(), nullable=True),
        sa.Column("media_port", sa.Integer(), nullable=True),
        _utc("start_time"),
        _utc("end_time", nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("sample_rate", sa.Integer(), nullable=False),
        sa.Column("channels", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        _text("path"),
        _text("status"),
        _text("stop_reason", nullable=True),
        _text("phone_stop_reason", nullable=True),
        sa.Column(
            "extra",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        _counter("packets_received"),
        _counter("packets_lost"),
        _counter("packets_late"),
        _counter("packets_duplicate"),
        _counter("packets_foreign"),
        _counter("packets_malformed"),
        _counter("packets_other"),
        _counter("ssrc_changes"),
        _utc("created_at"),
        _utc("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recordings")),
        sa.UniqueConstraint("path", name=op.f("uq_recordings_path")),
    )
    for columns in (
        ["session_id"],
        ["local_number"],
        ["remote_number"],
        ["start_time"],
        ["status"],
        ["device", "start_time"],
    ):
        op.create_index(op.f(f"ix_recordings_{'_'.join(columns)}"), "recordings", columns)


def downgrade() -> None:
    op.drop_table("recordings")
