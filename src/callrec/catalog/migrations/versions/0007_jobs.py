"""Jobs: the durable work done after a call (issue 16 part 3).

``jobs`` holds one row per piece of work (a recording's completion, a webhook delivery, the
``on_complete_command``), unique per (kind, key); ``job_attempts`` the history of each run.
One row of kind ``jobs.installed`` marks when jobs began: recordings finished before it are
not caught up (an upgrade does not notify every webhook of the whole archive).

Revision ID: 0007
Revises: 0006

Plain SQL types only (no callrec TypeDecorators), as in 0001.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("run_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("kind", "key", name=op.f("uq_jobs_kind_key")),
    )
    op.create_index(op.f("ix_jobs_state_run_after"), "jobs", ["state", "run_after"])
    op.create_table(
        "job_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("runner", sa.String(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_job_attempts_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_attempts")),
    )
    op.create_index(op.f("ix_job_attempts_job_id"), "job_attempts", ["job_id"])
    # The catch-up looks for final recordings changed lately without their job.
    op.create_index(op.f("ix_recordings_updated_at"), "recordings", ["updated_at"])
    # Each backend's clock in the form the catalogue stores (SQLite: naive UTC text).
    if op.get_bind().dialect.name == "sqlite":
        now = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
        empty = "'{}'"
    else:
        now = "now()"
        empty = "'{}'::jsonb"
    op.execute(
        "INSERT INTO jobs (kind, key, payload, state, attempts, run_after, created_at, "
        f"finished_at) VALUES ('jobs.installed', '', {empty}, 'done', 0, {now}, {now}, {now})"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_recordings_updated_at"), table_name="recordings")
    op.drop_index(op.f("ix_job_attempts_job_id"), table_name="job_attempts")
    op.drop_table("job_attempts")
    op.drop_index(op.f("ix_jobs_state_run_after"), table_name="jobs")
    op.drop_table("jobs")
