"""ORM models of the web front end: users, API tokens, browser sessions, audit log, notes, tags.

They share :data:`callrec.catalog.models.Base` (and so its naming convention and migrations)
with the recordings table. Migration ``0003`` creates them; any change needs a new migration.

* ``audit_log`` has no foreign keys on purpose: a row keeps the user name and recording id it
  was written with after the user or the recording is deleted. Database triggers (created by
  the migration) refuse UPDATE and DELETE on it, so the log is append-only for every client.
* Notes and tags belong to a recording and go with it (``ON DELETE CASCADE``).
* Secrets are never stored: passwords as Argon2 hashes, API tokens and session cookies as the
  SHA-256 of a random 256-bit value.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from callrec.catalog.models import Base, CleanJSON, CleanText, UTCDateTime
from callrec.catalog.records import utcnow


class User(Base):
    """Someone who may sign in to the web UI or own API tokens."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: Lower case, unique.
    username: Mapped[str] = mapped_column(CleanText(), unique=True)
    #: Argon2id hash in PHC string format.
    password_hash: Mapped[str] = mapped_column(CleanText())
    #: ``admin`` or ``listener``.
    role: Mapped[str] = mapped_column(CleanText())
    #: When not empty, the user sees only calls of these extensions (local or remote number).
    extensions: Mapped[list[str]] = mapped_column(CleanJSON(), default=list)
    #: When not empty, the user sees only calls recorded by these devices (MACs).
    devices: Mapped[list[str]] = mapped_column(CleanJSON(), default=list)
    #: Set for a generated one-time password; the web UI asks for a new one first.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ApiToken(Base):
    """A bearer token for scripts, acting as its user."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(CleanText(), default="")
    #: SHA-256 (hex) of the token; the token itself is shown once, when created.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: The token's first characters, so a user can tell tokens apart.
    prefix: Mapped[str] = mapped_column(CleanText())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebSession(Base):
    """A signed-in browser: the cookie carries a random value, the row its SHA-256."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: Sent back with every form and unsafe API call made with this cookie.
    csrf_token: Mapped[str] = mapped_column(CleanText())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    client_address: Mapped[str] = mapped_column(CleanText(), default="")
    user_agent: Mapped[str] = mapped_column(CleanText(), default="")


class AuditEntry(Base):
    """Who did what to which recording, when and from where. Append-only."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    #: Not a foreign key: the row outlives the user.
    user_id: Mapped[int | None] = mapped_column(Integer)
    #: As typed for a failed sign-in, else the user's name.
    username: Mapped[str] = mapped_column(CleanText(), default="", index=True)
    action: Mapped[str] = mapped_column(CleanText(), index=True)
    #: Not a foreign key: the row outlives the recording.
    recording_id: Mapped[int | None] = mapped_column(Integer, index=True)
    client_address: Mapped[str] = mapped_column(CleanText(), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(CleanJSON(), default=dict)


class Note(Base):
    """A free-text note on a recording."""

    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recording_id: Mapped[int] = mapped_column(
        ForeignKey("recordings.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    username: Mapped[str] = mapped_column(CleanText(), default="")
    text: Mapped[str] = mapped_column(CleanText())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RecordingTag(Base):
    """A short label on a recording (``complaint``, ``training``...); lower case."""

    __tablename__ = "recording_tags"

    recording_id: Mapped[int] = mapped_column(
        ForeignKey("recordings.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(CleanText(), primary_key=True)

    __table_args__ = (Index(None, "tag", "recording_id"),)
