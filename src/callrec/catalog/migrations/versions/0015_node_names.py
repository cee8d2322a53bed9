"""Which running server holds each ``node_name`` (two servers given one name are told).

Revision ID: 0015
Revises: 0014

Plain SQL types only (no callrec TypeDecorators), as in 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "node_names",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("instance", sa.String(length=32), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_node_names")),
    )


def downgrade() -> None:
    op.drop_table("node_names")
