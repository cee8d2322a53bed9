"""Tamper evidence: the recordings' hash chain, its head, its signatures, the last checks.

Revision ID: 0008
Revises: 0007

Plain SQL types only, as in 0001. ``integrity_chain`` and ``integrity_signatures`` are made
append-only by triggers that refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL), as
``audit_log`` is (0003). ``integrity_head`` gets its one row (no entry yet). Recordings
catalogued before this revision are appended by the server's catch-up, not here: a
migration runs before anyone can tell whether their files are still what they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY_MESSAGE = "the integrity chain is append-only"
APPEND_ONLY_TABLES = ("integrity_chain", "integrity_signatures")
GENESIS = "0" * 64


def _text(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(), nullable=nullable)


def _hex(name: str, length: int = 64, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(length), nullable=nullable)


def _utc(name: str) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "integrity_chain",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("recording_id", sa.Integer(), nullable=False),
        _hex("kind", 16),
        _text("path"),
        _hex("sha256", nullable=True),
        _text("body"),
        _hex("hash"),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_integrity_chain")),
        sa.UniqueConstraint("hash", name=op.f("uq_integrity_chain_hash")),
    )
    for column in ("recording_id", "sha256"):
        op.create_index(op.f(f"ix_integrity_chain_{column}"), "integrity_chain", [column])
    head = op.create_table(
        "integrity_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        _hex("hash"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integrity_head")),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS}])
    op.create_table(
        "integrity_signatures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        _hex("hash"),
        _utc("signed_at"),
        _hex("key_id"),
        _text("body"),
        _hex("signature", 128),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integrity_signatures")),
    )
    op.create_index(op.f("ix_integrity_signatures_seq"), "integrity_signatures", ["seq"])
    op.create_table(
        "integrity_checks",
        sa.Column("recording_id", sa.Integer(), autoincrement=False, nullable=False),
        _utc("checked_at"),
        _hex("result", 16),
        _text("detail"),
        sa.PrimaryKeyConstraint("recording_id", name=op.f("pk_integrity_checks")),
    )
    for name in APPEND_ONLY_TABLES:
        _append_only(name)


def _append_only(table: str) -> None:
    if op.get_context().dialect.name == "postgresql":
        function = f"callrec_{table}_append_only"
        op.execute(
            f"CREATE FUNCTION {function}() RETURNS trigger"
            " LANGUAGE plpgsql AS $$ BEGIN"
            f" RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}'; END; $$"
        )
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
            f" FOR EACH ROW EXECUTE FUNCTION {function}()"
        )
        # TRUNCATE bypasses row triggers; refuse it too.
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table}"
                f" BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
            )


def downgrade() -> None:
    op.drop_table("integrity_checks")
    op.drop_table("integrity_signatures")
    op.drop_table("integrity_head")
    op.drop_table("integrity_chain")
    if op.get_context().dialect.name == "postgresql":
        for name in APPEND_ONLY_TABLES:
            op.execute(f"DROP FUNCTION IF EXISTS callrec_{name}_append_only()")
