"""ORM models of retention and legal hold (issue 16, part R): holds, the recordings a hold
names, and the tombstones deleted recordings leave behind.

They share :data:`callrec.catalog.models.Base` with the recordings table. Migration
``0009_retention`` creates them; any change needs a new migration.

* ``legal_holds``: one row per hold, never deleted: releasing a hold stamps it
  (``released_at``, ``released_by``), so who held what, and until when, stays answerable.
  A hold on a number or a tag is a rule: it covers recordings made after it too. A hold on
  recordings (by id, or the result of a search, whose filters ``query`` keeps for the
  record) lists them in ``legal_hold_recordings``.
* ``tombstones``: what is left of a deleted recording: its identity (id, uid, path,
  SHA-256, numbers, device, start time), when, who (``retention``, ``quota`` or a user) and
  why. ``files_removed_at`` is NULL while its files may still be on disk: a tombstone is
  written in the transaction that deletes the row, before any file goes, so a crash between
  the two leaves a pending tombstone that the next sweep finishes (never a file gone with no
  record). No foreign keys: a tombstone outlives its recording by design.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from callrec.catalog.models import Base, CleanJSON, CleanText, UTCDateTime
from callrec.catalog.records import utcnow


class LegalHold(Base):
    """A legal hold: recordings it covers may not be deleted by anyone or anything."""

    __tablename__ = "legal_holds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: ``recording``, ``search``, ``number`` or ``tag``.
    kind: Mapped[str] = mapped_column(CleanText())
    #: The number or tag of a rule hold; empty for recordings and searches.
    value: Mapped[str] = mapped_column(CleanText(), default="")
    #: A search hold's filters, as the list's URL had them (for the record only).
    query: Mapped[dict[str, Any]] = mapped_column(CleanJSON(), default=dict)
    reason: Mapped[str] = mapped_column(CleanText())
    created_by: Mapped[str] = mapped_column(CleanText())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    released_by: Mapped[str | None] = mapped_column(CleanText())


class HeldRecording(Base):
    """A recording named by a hold on recordings or on a search."""

    __tablename__ = "legal_hold_recordings"

    hold_id: Mapped[int] = mapped_column(
        ForeignKey("legal_holds.id", ondelete="CASCADE"), primary_key=True
    )
    #: Not a foreign key to recordings: a held recording is never deleted anyway, and the
    #: link must not be what makes a delete fail (the hold check says why, in words).
    recording_id: Mapped[int] = mapped_column(Integer, primary_key=True)

    __table_args__ = (Index(None, "recording_id", "hold_id"),)


class Tombstone(Base):
    """What is left of a deleted recording (see the module docstring)."""

    __tablename__ = "tombstones"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recording_id: Mapped[int] = mapped_column(Integer, index=True)
    uid: Mapped[str | None] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(CleanText())
    #: Other files that went with it: companions (the SIP mono mix), the import's original.
    files: Mapped[list[str]] = mapped_column(CleanJSON(), default=list)
    sha256: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(CleanText())
    device: Mapped[str] = mapped_column(CleanText())
    local_number: Mapped[str] = mapped_column(CleanText())
    remote_number: Mapped[str] = mapped_column(CleanText())
    start_time: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    #: ``retention``, ``quota``, or the user (``cli:<login>`` from the command line).
    deleted_by: Mapped[str] = mapped_column(CleanText())
    #: The rule that expired it (``default 90 days``, ``tag=complaint 2555 days``), ``quota``,
    #: ``before 2026-01-01``, or what the user gave.
    reason: Mapped[str] = mapped_column(CleanText(), default="")
    files_removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    #: The node whose recordings directory holds the files (docs/scaling.md).
    node: Mapped[str | None] = mapped_column(String(63))
