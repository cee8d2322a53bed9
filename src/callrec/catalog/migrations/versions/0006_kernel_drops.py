"""Three more counters per recording: kernel drops, RTP clock changes, latch changes.

``packets_kernel_dropped`` counts datagrams the kernel dropped on the recording's socket
because its queue was full (a burst larger than ``media_rcvbuf``): before, such a recording
came out short with nothing counted (issue 13 item 10). ``clock_changes`` counts how often the
stream's RTP clock was found to differ from the codec's (issue 13 item 7). ``latch_changes``
counts how often the call's media latch moved to another source port of the phone's address
(issue 14 item 1). Rows from before count 0.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

COLUMNS = ("packets_kernel_dropped", "clock_changes", "latch_changes")


def upgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
