"""Several recording nodes on one catalogue (issue 17 part 2).

``recordings.node``: the ``node_name`` of the server that recorded each row; rows from before
become the migrating node's (``Catalog.migrate(node=...)``: the installation being upgraded
recorded them), or stay NULL when no node is given. ``tombstones.node``: whose disk a deleted
recording's files are on. ``live_calls``: the calls
each node is recording now, for every node's live page.

Revision ID: 0013
Revises: 0012

Plain SQL types only (no callrec TypeDecorators), as in 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(sa.Column("node", sa.String(length=63), nullable=True))
        batch.create_index(op.f("ix_recordings_node"), ["node"])
    with op.batch_alter_table("tombstones") as batch:
        batch.add_column(sa.Column("node", sa.String(length=63), nullable=True))
    config = op.get_context().config
    node = config.attributes.get("node") if config is not None else None
    if node:
        recordings = sa.table("recordings", sa.column("node", sa.String()))
        op.execute(recordings.update().where(recordings.c.node.is_(None)).values(node=node))
    op.create_table(
        "live_calls",
        sa.Column("uid", sa.String(length=32), nullable=False),
        sa.Column("node", sa.String(length=63), nullable=False),
        sa.Column("data", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("uid", name=op.f("pk_live_calls")),
    )
    with op.batch_alter_table("live_calls") as batch:
        batch.create_index(op.f("ix_live_calls_node"), ["node"])
        batch.create_index(op.f("ix_live_calls_seen_at"), ["seen_at"])


def downgrade() -> None:
    op.drop_table("live_calls")
    with op.batch_alter_table("tombstones") as batch:
        batch.drop_column("node")
    with op.batch_alter_table("recordings") as batch:
        batch.drop_index(op.f("ix_recordings_node"))
        batch.drop_column("node")
