"""Archive copies (issue 16, part 4): which recordings were transcoded to FLAC or Opus, and
the claims that keep two processes from transcoding one recording at once.

One row per recording that an archive run has touched, in ``recording_archives`` (migration
``0010``), going through these states::

    claimed --(copy verified, row switched to it)--> switched --(WAV removed)--> done
       \\--(encode or check failed)--> failed

The switch is one transaction: the recording's ``path``, ``size_bytes`` and ``sha256`` become
the archive file's, its ``extra["archive"]`` says what it was (format, date, the WAV's
SHA-256, size and path), and this row becomes ``switched``. Before it the catalogue names the
WAV, after it the archive: a crash anywhere leaves one of the two catalogued, and its file on
disk. A claim names its holder (``host:pid:nonce``) and lasts until ``claimed_until``; a claim
whose holder died (same host, no such process) or that ran out may be taken over.

The queries work on a :class:`Catalog`'s connections (same transaction discipline as
:mod:`callrec.catalog.sipaccounts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import BigInteger, ForeignKey, Integer, String, func, or_, select
from sqlalchemy.orm import Mapped, mapped_column

from callrec.catalog.integrity import chain_finished
from callrec.catalog.mappers import recording_info
from callrec.catalog.models import Base, CleanText, Recording, UTCDateTime
from callrec.catalog.records import FINAL_STATUSES, RecordingInfo, require_aware
from callrec.catalog.store import Catalog
from callrec.exceptions import CatalogError

CLAIMED: Final = "claimed"
SWITCHED: Final = "switched"
DONE: Final = "done"
FAILED: Final = "failed"
ARCHIVE_STATES: Final = (CLAIMED, SWITCHED, DONE, FAILED)
#: Size of a WAV header (callrec's canonical one): a file no larger holds no audio.
WAV_HEADER_BYTES: Final = 44
#: Containers an archive may be.
ARCHIVE_FORMATS: Final = ("flac", "opus")


class ArchiveConflict(CatalogError):
    """Another process, or a deletion, got there first: the claim was lost, or the recording
    changed or went while it was archived. Nothing was changed."""


class RecordingArchive(Base):
    """What an archive run did to one recording (see the module docstring)."""

    __tablename__ = "recording_archives"

    recording_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("recordings.id", ondelete="CASCADE"), primary_key=True
    )
    #: claimed, switched, done or failed.
    state: Mapped[str] = mapped_column(CleanText(), index=True)
    #: flac or opus.
    format: Mapped[str] = mapped_column(CleanText())
    #: ``host:pid:nonce`` of the process transcoding it; None once it let go.
    claimed_by: Mapped[str | None] = mapped_column(CleanText())
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: The WAV's path, size and SHA-256 (kept: the original's evidence).
    wav_path: Mapped[str] = mapped_column(CleanText())
    wav_size: Mapped[int | None] = mapped_column(BigInteger)
    wav_sha256: Mapped[str | None] = mapped_column(String(64))
    #: Sample frames of the recording (the archive decodes to exactly as many).
    frames: Mapped[int | None] = mapped_column(BigInteger)
    archive_path: Mapped[str | None] = mapped_column(CleanText())
    archive_size: Mapped[int | None] = mapped_column(BigInteger)
    archive_sha256: Mapped[str | None] = mapped_column(String(64))
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: Why the last attempt failed.
    error: Mapped[str | None] = mapped_column(CleanText())


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveInfo:
    """One ``recording_archives`` row as plain values."""

    recording_id: int
    state: str
    format: str
    claimed_by: str | None
    claimed_until: datetime | None
    wav_path: str
    wav_size: int | None
    wav_sha256: str | None
    frames: int | None
    archive_path: str | None
    archive_size: int | None
    archive_sha256: str | None
    archived_at: datetime | None
    attempts: int
    error: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchivedFile:
    """A verified archive copy, as the switch records it."""

    format: str
    path: str
    size: int
    sha256: str
    frames: int
    archived_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveTotals:
    """What ``callrec archive show`` reports."""

    #: Rows per state.
    states: dict[str, int]
    #: Archived recordings per format.
    formats: dict[str, int]
    wav_bytes: int
    archive_bytes: int

    @property
    def saved_bytes(self) -> int:
        return self.wav_bytes - self.archive_bytes


def _info(row: RecordingArchive) -> ArchiveInfo:
    return ArchiveInfo(
        recording_id=row.recording_id,
        state=row.state,
        format=row.format,
        claimed_by=row.claimed_by,
        claimed_until=row.claimed_until,
        wav_path=row.wav_path,
        wav_size=row.wav_size,
        wav_sha256=row.wav_sha256,
        frames=row.frames,
        archive_path=row.archive_path,
        archive_size=row.archive_size,
        archive_sha256=row.archive_sha256,
        archived_at=row.archived_at,
        attempts=row.attempts,
        error=row.error,
    )


def archive_extra(rec: RecordingInfo, archived: ArchivedFile) -> dict[str, Any]:
    """What ``extra["archive"]`` of an archived recording says."""
    return {
        "format": archived.format,
        "archived_at": archived.archived_at.isoformat(),
        "original_path": rec.path,
        "original_size": rec.size_bytes,
        "original_sha256": rec.sha256,
    }


class ArchiveStore:
    """The archive policy's queries on a catalogue."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def candidates(
        self,
        *,
        ended_before: datetime,
        limit: int,
        ids: list[int] | None = None,
        node: str | None = None,
    ) -> list[RecordingInfo]:
        """Finished WAV recordings that ended before ``ended_before`` and have no archive
        row (or, among ``ids`` when given, whatever their age, any not yet switched), oldest
        first; with ``node``, that node's (and those of no node): its disk holds them."""
        require_aware("ended_before", ended_before)
        statement = (
            select(Recording)
            .outerjoin(RecordingArchive, RecordingArchive.recording_id == Recording.id)
            .where(Recording.status.in_(sorted(FINAL_STATUSES)))
            .where(func.lower(Recording.path).like("%.wav"))
            # A WAV that is its header alone (a call that never sent audio) saves nothing.
            .where(or_(Recording.size_bytes.is_(None), Recording.size_bytes > WAV_HEADER_BYTES))
        )
        if ids is not None:
            statement = statement.where(Recording.id.in_(ids)).where(
                (RecordingArchive.state.is_(None)) | RecordingArchive.state.in_((CLAIMED, FAILED))
            )
        else:
            statement = statement.where(Recording.end_time < ended_before).where(
                RecordingArchive.state.is_(None)
            )
        if node is not None:
            statement = statement.where(or_(Recording.node == node, Recording.node.is_(None)))
        statement = statement.order_by(Recording.end_time, Recording.id).limit(limit)
        with self.catalog.transaction("find recordings to archive") as session:
            return [recording_info(row) for row in session.scalars(statement)]

    def claim(
        self, rec_id: int, *, fmt: str, holder: str, until: datetime, now: datetime, stale: Any
    ) -> RecordingInfo | None:
        """Claim the recording for ``holder`` until ``until``; the recording as it is now, or
        None when it is gone, not a finished WAV, archived, or claimed by a live holder.
        ``stale(claimed_by, claimed_until)`` says whether another's claim may be taken over;
        a failed attempt may be retried."""
        if fmt not in ARCHIVE_FORMATS:
            raise CatalogError(f"archive format must be one of {ARCHIVE_FORMATS}, not {fmt!r}")
        with self.catalog.transaction(f"claim recording {rec_id}", write=True) as session:
            row = session.get(Recording, rec_id, with_for_update=True)
            if row is None or row.status not in FINAL_STATUSES:
                return None
            if not row.path.lower().endswith(".wav"):
                return None
            claim = session.get(RecordingArchive, rec_id, with_for_update=True)
            if claim is None:
                claim = RecordingArchive(recording_id=rec_id, attempts=0)
                session.add(claim)
            elif claim.state == CLAIMED and claim.claimed_by != holder:
                if not stale(claim.claimed_by, claim.claimed_until):
                    return None
            elif claim.state not in (CLAIMED, FAILED):
                return None
            claim.state = CLAIMED
            claim.format = fmt
            claim.claimed_by = holder
            claim.claimed_until = until
            claim.wav_path = row.path
            claim.wav_size = row.size_bytes
            claim.wav_sha256 = row.sha256
            claim.attempts = (claim.attempts or 0) + 1
            claim.error = None
            return recording_info(row)

    def holds(self, rec_id: int, holder: str, *, until: datetime) -> bool:
        """Whether ``holder`` still holds its claim; if so it is extended to ``until``."""
        with self.catalog.transaction(f"renew claim on {rec_id}", write=True) as session:
            claim = session.get(RecordingArchive, rec_id, with_for_update=True)
            if claim is None or claim.state != CLAIMED or claim.claimed_by != holder:
                return False
            claim.claimed_until = until
            return True

    def switch(self, rec_id: int, holder: str, archived: ArchivedFile) -> RecordingInfo:
        """Make the catalogue name the verified archive instead of the WAV, in one
        transaction; :class:`ArchiveConflict` (and nothing changed) when ``holder`` lost its
        claim or the row changed or went meanwhile."""
        with self.catalog.transaction(f"switch recording {rec_id}", write=True) as session:
            row = session.get(Recording, rec_id, with_for_update=True)
            claim = session.get(RecordingArchive, rec_id, with_for_update=True)
            if row is None or claim is None:
                raise ArchiveConflict(f"recording {rec_id} was deleted while it was archived")
            if claim.state != CLAIMED or claim.claimed_by != holder:
                raise ArchiveConflict(f"recording {rec_id}: the claim to archive it was lost")
            if row.path != claim.wav_path or row.sha256 != claim.wav_sha256:
                raise ArchiveConflict(f"recording {rec_id} changed while it was archived")
            before = recording_info(row)
            _switch_row(row, claim, before, archived)
            # The hash chain learns the new file in the same transaction (an `updated`
            # entry): `callrec verify` then vouches for the archive, not the gone WAV.
            session.flush()
            chain_finished(session.connection(), [rec_id])
            return recording_info(row)

    def adopt(self, uid: str, archived: ArchivedFile, wav_sha256: str | None) -> bool:
        """What a catalogue rebuild does with an archive sidecar: switch the row of the
        recording ``uid`` to the archive, if it still names the WAV. True when it changed."""
        with self.catalog.transaction(f"adopt archive of {uid}", write=True) as session:
            row = session.scalars(
                select(Recording).where(Recording.uid == uid).with_for_update()
            ).first()
            if row is None or row.path == archived.path:
                return False
            if wav_sha256 is not None and row.sha256 not in (None, wav_sha256):
                return False
            claim = session.get(RecordingArchive, row.id, with_for_update=True)
            if claim is None:
                claim = RecordingArchive(recording_id=row.id, attempts=1)
                session.add(claim)
            claim.format = archived.format
            claim.wav_path = row.path
            claim.wav_size = row.size_bytes
            claim.wav_sha256 = row.sha256
            _switch_row(row, claim, recording_info(row), archived)
            session.flush()
            chain_finished(session.connection(), [row.id])
            return True

    def finished(self, rec_id: int) -> None:
        """The WAV of a switched recording is gone: ``done``."""
        with self.catalog.transaction(f"finish archiving {rec_id}", write=True) as session:
            claim = session.get(RecordingArchive, rec_id, with_for_update=True)
            if claim is not None and claim.state == SWITCHED:
                claim.state = DONE
                claim.claimed_by = None
                claim.claimed_until = None

    def fail(self, rec_id: int, holder: str, error: str) -> None:
        """The attempt failed: the claim is let go, the reason kept."""
        with self.catalog.transaction(f"record failure of {rec_id}", write=True) as session:
            claim = session.get(RecordingArchive, rec_id, with_for_update=True)
            if claim is not None and claim.state == CLAIMED and claim.claimed_by == holder:
                claim.state = FAILED
                claim.claimed_by = None
                claim.claimed_until = None
                claim.error = error[:2000]

    def release(self, rec_id: int, holder: str) -> None:
        """Let go of a claim without a verdict (a dry run, a process stopping)."""
        with self.catalog.transaction(f"release claim on {rec_id}", write=True) as session:
            claim = session.get(RecordingArchive, rec_id, with_for_update=True)
            if claim is not None and claim.state == CLAIMED and claim.claimed_by == holder:
                session.delete(claim)

    def unfinished(self) -> list[ArchiveInfo]:
        """Rows a run left behind: claims (maybe of dead holders) and switches whose WAV
        may still be on disk."""
        statement = select(RecordingArchive).where(RecordingArchive.state.in_((CLAIMED, SWITCHED)))
        with self.catalog.transaction("list unfinished archive runs") as session:
            return [_info(row) for row in session.scalars(statement)]

    def path_catalogued(self, path: str) -> bool:
        """Whether some recording's row names ``path``."""
        statement = select(Recording.id).where(Recording.path == path)
        with self.catalog.transaction(f"look up {path}") as session:
            return session.scalars(statement).first() is not None

    def get(self, rec_id: int) -> ArchiveInfo | None:
        with self.catalog.transaction(f"read archive of {rec_id}") as session:
            row = session.get(RecordingArchive, rec_id)
            return None if row is None else _info(row)

    def totals(self) -> ArchiveTotals:
        archived = RecordingArchive.state.in_((SWITCHED, DONE))
        with self.catalog.transaction("count archives") as session:
            states = {
                state: int(n)
                for state, n in session.execute(
                    select(RecordingArchive.state, func.count()).group_by(RecordingArchive.state)
                )
            }
            formats = {
                fmt: int(n)
                for fmt, n in session.execute(
                    select(RecordingArchive.format, func.count())
                    .where(archived)
                    .group_by(RecordingArchive.format)
                )
            }
            sums = session.execute(
                select(
                    func.coalesce(func.sum(RecordingArchive.wav_size), 0),
                    func.coalesce(func.sum(RecordingArchive.archive_size), 0),
                ).where(archived)
            ).one()
        return ArchiveTotals(
            states=states,
            formats=formats,
            wav_bytes=int(sums[0] or 0),
            archive_bytes=int(sums[1] or 0),
        )


def _switch_row(
    row: Recording, claim: RecordingArchive, before: RecordingInfo, archived: ArchivedFile
) -> None:
    row.extra = {**dict(row.extra or {}), "archive": archive_extra(before, archived)}
    row.path = archived.path
    row.size_bytes = archived.size
    row.sha256 = archived.sha256
    claim.state = SWITCHED
    claim.frames = archived.frames
    claim.archive_path = archived.path
    claim.archive_size = archived.size
    claim.archive_sha256 = archived.sha256
    claim.archived_at = archived.archived_at
    claim.error = None
