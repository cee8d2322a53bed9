"""Each recording has a uid its engine gives it before the catalogue knows it.

The engine records first and catalogues later, through its journal (issue 12): the uid is how
a replayed start, checkpoint or finish finds its row, so replaying twice changes nothing.
Rows from before have none.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(sa.Column("uid", sa.String(length=32), nullable=True))
        batch.create_index(op.f("ix_recordings_uid"), ["uid"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.drop_index(op.f("ix_recordings_uid"))
        batch.drop_column("uid")
