"""ORM models of the catalogue and the column types that make both backends behave alike.

Two backend differences are ironed out here, on the way in and out of every column:

* SQLite has no time zones. :class:`UTCDateTime` stores UTC (naive on SQLite, ``timestamptz``
  on PostgreSQL) and always hands back timezone-aware UTC datetimes.
* PostgreSQL cannot store U+0000 in text or JSONB, and no driver can encode a lone surrogate.
  :class:`CleanText` and :class:`CleanJSON` replace both with U+FFFD on *every* backend, so a
  phone that sends ``%00`` gets the same row on SQLite and PostgreSQL instead of an error.

Any change here needs a new migration in ``migrations/versions``; the tests compare the two.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, Index, Integer, MetaData, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from callrec.catalog.records import STATUS_RECORDING, utcnow

#: Stable constraint and index names, so later migrations can refer to them on any backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def clean_text(value: str) -> str:
    """``value`` with the characters no backend can store (NUL, lone surrogates) replaced."""
    return _UNSTORABLE.sub(REPLACEMENT, value)


def clean_json(value: Any) -> Any:
    """:func:`clean_text` applied to every key and string inside a JSON value."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    return value


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime, stored as UTC and always returned as aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given for a UTC column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # Naive UTC text sorts and compares chronologically in SQLite.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class CleanText(TypeDecorator[str]):
    """Text that any backend can store (see :func:`clean_text`)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else clean_text(value)


class CleanJSON(TypeDecorator[Any]):
    """JSON (JSONB on PostgreSQL) whose strings any backend can store."""

    impl = JSON().with_variant(JSONB(), "postgresql")
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return clean_json(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _counter() -> Mapped[int]:
    return mapped_column(Integer, default=0)


class Recording(Base):
    """One recording: its call, its file and what became of its RTP stream."""

    __tablename__ = "recordings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: The engine's name for the recording, given before the catalogue knows it (its journal
    #: finds the row by it); None on rows from before the journal.
    uid: Mapped[str | None] = mapped_column(String(32), unique=True, index=True)
    source: Mapped[str] = mapped_column(CleanText(), default="server")
    session_id: Mapped[str] = mapped_column(CleanText(), index=True)
    device: Mapped[str] = mapped_column(CleanText())
    direction: Mapped[str] = mapped_column(CleanText(), default="")
    local_number: Mapped[str] = mapped_column(CleanText(), default="", index=True)
    local_name: Mapped[str] = mapped_column(CleanText(), default="")
    remote_number: Mapped[str] = mapped_column(CleanText(), default="", index=True)
    remote_name: Mapped[str] = mapped_column(CleanText(), default="")
    codec: Mapped[str] = mapped_column(CleanText())
    peer_address: Mapped[str] = mapped_column(CleanText(), default="")
    peer_port: Mapped[int | None] = mapped_column(Integer)
    media_port: Mapped[int | None] = mapped_column(Integer)
    start_time: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    duration: Mapped[float | None] = mapped_column(Float)
    sample_rate: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer, default=1)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(CleanText(), unique=True)
    status: Mapped[str] = mapped_column(CleanText(), default=STATUS_RECORDING, index=True)
    stop_reason: Mapped[str | None] = mapped_column(CleanText())
    phone_stop_reason: Mapped[str | None] = mapped_column(CleanText())
    extra: Mapped[dict[str, Any]] = mapped_column(CleanJSON(), default=dict)
    original_path: Mapped[str | None] = mapped_column(CleanText())
    original_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    packets_received: Mapped[int] = _counter()
    packets_lost: Mapped[int] = _counter()
    packets_late: Mapped[int] = _counter()
    packets_duplicate: Mapped[int] = _counter()
    packets_foreign: Mapped[int] = _counter()
    packets_malformed: Mapped[int] = _counter()
    packets_other: Mapped[int] = _counter()
    ssrc_changes: Mapped[int] = _counter()
    packets_kernel_dropped: Mapped[int] = _counter()
    clock_changes: Mapped[int] = _counter()
    latch_changes: Mapped[int] = _counter()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    #: The ``node_name`` of the ``callrec serve`` that recorded it (several nodes share one
    #: catalogue: docs/scaling.md); None on rows from before nodes (migration 0011).
    node: Mapped[str | None] = mapped_column(String(63), index=True)

    __table_args__ = (
        # One phone's calls, newest first; also serves lookups by device alone.
        Index(None, "device", "start_time"),
        # The job runner's catch-up: final recordings changed lately without their job.
        Index(None, "updated_at"),
        # SQLite: an id once given is never given again, not even after the newest row is
        # deleted (its tombstone, audit entries and chain entries keep naming it).
        {"sqlite_autoincrement": True},
    )

    def __repr__(self) -> str:
        return f"<Recording id={self.id} session_id={self.session_id!r} status={self.status!r}>"


class LiveCall(Base):
    """A call being recorded now on some node, for every node's live page (docs/scaling.md).

    Each node upserts its own calls every few seconds (``seen_at``) and deletes them when they
    end; a row not seen for a while belongs to a node that died and is deleted by any node."""

    __tablename__ = "live_calls"

    uid: Mapped[str] = mapped_column(String(32), primary_key=True)
    node: Mapped[str] = mapped_column(String(63), index=True)
    #: The call's :class:`~callrec.engine.LiveSession` as JSON (the live page's fields).
    data: Mapped[dict[str, Any]] = mapped_column(CleanJSON())
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class NodeName(Base):
    """Which running server holds a ``node_name`` (docs/scaling.md).

    Two servers given one name would take each other's jobs, recover each other's calls and
    overwrite each other's live calls; each claims its name every heartbeat with an id of its
    own, and a name another server refreshed lately is refused (``/health`` says so)."""

    __tablename__ = "node_names"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    #: Random per ``callrec serve`` run: a restart of the same server is another run.
    instance: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(CleanText())
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
