"""Web front end: users, API tokens, browser sessions, an append-only audit log, notes, tags.

Revision ID: 0003
Revises: 0002

Plain SQL types only (no callrec TypeDecorators), as in 0001. The audit log is made
append-only by triggers that refuse UPDATE and DELETE on both backends. Searches get a
trigram index over numbers and names (see ``callrec.catalog.search_index``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from callrec.catalog import search_index

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

APPEND_ONLY_MESSAGE = "audit_log is append-only"


def _text(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(), nullable=nullable)


def _utc(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _text("username"),
        _text("password_hash"),
        _text("role"),
        sa.Column("extensions", _JSON, nullable=False),
        sa.Column("devices", _JSON, nullable=False),
        sa.Column("must_change_password", sa.Boolean(), nullable=False),
        _utc("created_at"),
        _utc("updated_at"),
        _utc("last_login_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        _text("name"),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        _text("prefix"),
        _utc("created_at"),
        _utc("last_used_at", nullable=True),
        _utc("expires_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_api_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(op.f("ix_api_tokens_user_id"), "api_tokens", ["user_id"])
    op.create_table(
        "web_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        _text("csrf_token"),
        _utc("created_at"),
        _utc("last_seen_at"),
        _utc("expires_at"),
        _text("client_address"),
        _text("user_agent"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_web_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_web_sessions")),
    )
    op.create_index(op.f("ix_web_sessions_user_id"), "web_sessions", ["user_id"])
    op.create_index(op.f("ix_web_sessions_expires_at"), "web_sessions", ["expires_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _utc("at"),
        sa.Column("user_id", sa.Integer(), nullable=True),
        _text("username"),
        _text("action"),
        sa.Column("recording_id", sa.Integer(), nullable=True),
        _text("client_address"),
        sa.Column("detail", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    for column in ("at", "username", "action", "recording_id"):
        op.create_index(op.f(f"ix_audit_log_{column}"), "audit_log", [column])
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("recording_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        _text("username"),
        _text("text"),
        _utc("created_at"),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
            name=op.f("fk_notes_recording_id_recordings"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_notes_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notes")),
    )
    op.create_index(op.f("ix_notes_recording_id"), "notes", ["recording_id"])
    op.create_table(
        "recording_tags",
        sa.Column("recording_id", sa.Integer(), nullable=False),
        _text("tag"),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
            name=op.f("fk_recording_tags_recording_id_recordings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("recording_id", "tag", name=op.f("pk_recording_tags")),
    )
    op.create_index(
        op.f("ix_recording_tags_tag_recording_id"), "recording_tags", ["tag", "recording_id"]
    )
    _append_only_triggers()
    # Free-text search over numbers and names: a trigram index (FTS5 / pg_trgm).
    search_index.create(op.get_bind())


def _append_only_triggers() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION callrec_audit_log_append_only() RETURNS trigger"
            " LANGUAGE plpgsql AS $$ BEGIN"
            f" RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}'; END; $$"
        )
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log"
            " FOR EACH ROW EXECUTE FUNCTION callrec_audit_log_append_only()"
        )
        # TRUNCATE bypasses row triggers; refuse it too.
        op.execute(
            "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log"
            " FOR EACH STATEMENT EXECUTE FUNCTION callrec_audit_log_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log"
                f" BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
            )


def downgrade() -> None:
    search_index.drop(op.get_bind())
    op.drop_table("recording_tags")
    op.drop_table("notes")
    op.drop_table("audit_log")
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS callrec_audit_log_append_only()")
    op.drop_table("web_sessions")
    op.drop_table("api_tokens")
    op.drop_table("users")
