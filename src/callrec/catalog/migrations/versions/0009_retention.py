"""Retention and legal hold (issue 16, part R): holds, the recordings they name, tombstones.

See :mod:`callrec.catalog.retention` for what each table is for. Plain SQL types only, as in
0001 and 0003.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _text(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(), nullable=nullable)


def _utc(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "legal_holds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _text("kind"),
        _text("value"),
        sa.Column("query", _JSON, nullable=False),
        _text("reason"),
        _text("created_by"),
        _utc("created_at"),
        _utc("released_at", nullable=True),
        _text("released_by", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_legal_holds")),
    )
    op.create_index(op.f("ix_legal_holds_released_at"), "legal_holds", ["released_at"])
    op.create_table(
        "legal_hold_recordings",
        sa.Column("hold_id", sa.Integer(), nullable=False),
        sa.Column("recording_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["hold_id"],
            ["legal_holds.id"],
            name=op.f("fk_legal_hold_recordings_hold_id_legal_holds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("hold_id", "recording_id", name=op.f("pk_legal_hold_recordings")),
    )
    op.create_index(
        op.f("ix_legal_hold_recordings_recording_id_hold_id"),
        "legal_hold_recordings",
        ["recording_id", "hold_id"],
    )
    op.create_table(
        "tombstones",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("recording_id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(length=32), nullable=True),
        _text("path"),
        sa.Column("files", _JSON, nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        _text("source"),
        _text("device"),
        _text("local_number"),
        _text("remote_number"),
        _utc("start_time"),
        _utc("deleted_at"),
        _text("deleted_by"),
        _text("reason"),
        _utc("files_removed_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tombstones")),
    )
    for column in ("recording_id", "deleted_at", "files_removed_at"):
        op.create_index(op.f(f"ix_tombstones_{column}"), "tombstones", [column])


def downgrade() -> None:
    op.drop_table("tombstones")
    op.drop_table("legal_hold_recordings")
    op.drop_table("legal_holds")
