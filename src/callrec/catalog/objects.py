"""Which of a recording's files are in the object store (issue 17 part 1), and the queries of
the upload jobs, the cache and the web.

One row of ``recording_objects`` (migration ``0011``) per file uploaded and verified: the
recording, the file's role and catalogued path, its key in the store, its size and the
SHA-256 of the bytes the store returned, when that was checked (``uploaded_at``) and when
the local copy was removed (``local_removed_at``; None while this node keeps it as a cache).
A row is written only after its object was read back and matched: a row means "safe in the
store".

A recording that is deleted leaves its rows behind with ``recording_id`` NULL (the foreign
key's ``ON DELETE SET NULL``, inside the delete's own transaction, whoever deletes it: the
web, the CLI, a retention or quota sweep); so does a file the recording no longer has (the
WAV an archive copy replaced). Those are orphans, whose objects the storage sweep deletes
before it forgets the rows: nothing is left in the bucket, even when the store was down
when the recording went.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    and_,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Mapped, mapped_column

from callrec.catalog.jobs import JOBS
from callrec.catalog.models import Base, CleanText, Recording, UTCDateTime
from callrec.catalog.records import FINAL_STATUSES, RecordingInfo, utcnow
from callrec.catalog.store import Catalog

#: Roles of a recording's files.
AUDIO: Final = "audio"
COMPANION: Final = "companion"
ORIGINAL: Final = "original"
SIDECAR: Final = "sidecar"
ROLES: Final = (AUDIO, COMPANION, ORIGINAL, SIDECAR)
#: The sidecar of a recording's file (the engine's ``journalfile.SIDECAR_SUFFIX``).
SIDECAR_SUFFIX: Final = ".json"
#: The job kind that uploads a recording (``callrec.jobs.upload``); its key is
#: ``<uid or id-n>:<sha256 of the audio>``, so an archive copy (a new file) gets a job of
#: its own.
UPLOAD_KIND: Final = "storage.upload"


class RecordingObject(Base):
    """One file of a recording, verified in the object store (see the module docstring)."""

    __tablename__ = "recording_objects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: None once the recording was deleted (or the file is no longer one of its files).
    recording_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("recordings.id", ondelete="SET NULL")
    )
    role: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(CleanText())
    key: Mapped[str] = mapped_column(CleanText(), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    local_removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index(None, "recording_id", "path"),
        # The cache's looks: verified copies still on disk, oldest first.
        Index(None, "local_removed_at", "uploaded_at"),
    )


OBJECTS = cast(Table, RecordingObject.__table__)
RECORDINGS = cast(Table, Recording.__table__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectInfo:
    id: int
    recording_id: int | None
    role: str
    path: str
    key: str
    size: int
    sha256: str
    uploaded_at: datetime
    local_removed_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedObject:
    """A file uploaded and read back, as :meth:`ObjectQueries.record_uploaded` stores it."""

    role: str
    path: str
    key: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Backlog:
    """Finished recordings whose current file is not verified in the store yet."""

    count: int
    #: When the oldest of them ended (None: none waits).
    oldest_end: datetime | None


def recording_files(rec: RecordingInfo) -> list[tuple[str, str]]:
    """(role, path) of every file of ``rec`` that goes to the store, the audio first."""
    files = [(AUDIO, rec.path)]
    companions = (rec.extra or {}).get("companions", [])
    if isinstance(companions, list):
        files += [
            (COMPANION, c["path"])
            for c in companions
            if isinstance(c, dict) and isinstance(c.get("path"), str)
        ]
    if rec.original_path:
        files.append((ORIGINAL, rec.original_path))
    files.append((SIDECAR, rec.path + SIDECAR_SUFFIX))
    return files


def upload_key(owner: str, sha256: str | None, node: str | None = None) -> str:
    """The key of a recording's upload job (see :data:`UPLOAD_KIND`): ``<owner>:<sha256>``,
    then ``@<node>`` for a recording of a node, whose runners alone claim it (the file is on
    that node's disk; docs/scaling.md)."""
    return f"{owner}:{sha256 or ''}" + (f"@{node}" if node else "")


class ObjectQueries:
    """The ``recording_objects`` queries over a :class:`Catalog`; blocking, each call one
    transaction."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # -- writes ------------------------------------------------------------------------------

    def record_uploaded(
        self, recording_id: int, audio_path: str, objects: Sequence[VerifiedObject]
    ) -> list[ObjectInfo] | None:
        """Record ``objects`` as the recording's files in the store, if the recording is
        still there with ``audio_path`` as its file (an archive switch or a delete meanwhile:
        None, nothing written; the caller deletes what it uploaded); the rows written. Rows
        of the recording's files that are no longer among ``objects`` become orphans."""
        return self.record_uploaded_many([(recording_id, audio_path, objects)])[0]

    def record_uploaded_many(
        self, uploads: Sequence[tuple[int, str, Sequence[VerifiedObject]]]
    ) -> list[list[ObjectInfo] | None]:
        """:meth:`record_uploaded` for several recordings (``(id, audio path, objects)``) in
        one transaction, answered in order: at 1,000 calls a minute finishing, one commit
        per upload would keep the catalogue's single writer busy (issue 17)."""
        if not uploads:
            return []
        now = utcnow()
        answers: list[list[ObjectInfo] | None] = []
        with self.catalog.transaction("record uploaded files", write=True) as session:
            connection = session.connection()
            ids = {recording_id for recording_id, _, _ in uploads}
            paths = dict(
                connection.execute(
                    select(RECORDINGS.c.id, RECORDINGS.c.path).where(RECORDINGS.c.id.in_(ids))
                ).all()
            )
            for recording_id, audio_path, objects in uploads:
                if paths.get(recording_id) != audio_path:
                    answers.append(None)
                    continue
                answers.append(self._record(connection, recording_id, objects, now))
        return answers

    @staticmethod
    def _record(
        connection: Any, recording_id: int, objects: Sequence[VerifiedObject], now: datetime
    ) -> list[ObjectInfo]:
        keys = {o.key for o in objects}
        existing = {
            row.key: row.id
            for row in connection.execute(
                select(OBJECTS.c.key, OBJECTS.c.id).where(OBJECTS.c.key.in_(keys))
            )
        }
        for obj in objects:
            values = {
                "recording_id": recording_id,
                "role": obj.role,
                "path": obj.path,
                "key": obj.key,
                "size": obj.size,
                "sha256": obj.sha256,
                "uploaded_at": now,
                "local_removed_at": None,
            }
            if obj.key in existing:
                connection.execute(
                    update(OBJECTS).where(OBJECTS.c.id == existing[obj.key]).values(values)
                )
            else:
                connection.execute(insert(OBJECTS).values(values))
        connection.execute(
            update(OBJECTS)
            .where(OBJECTS.c.recording_id == recording_id)
            .where(OBJECTS.c.key.not_in(keys))
            .values(recording_id=None)
        )
        rows = connection.execute(select(OBJECTS).where(OBJECTS.c.key.in_(keys)))
        return [_info(r._mapping) for r in rows]

    def mark_local_removed(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if not ids:
            return
        with self.catalog.transaction("mark local copies removed", write=True) as session:
            session.connection().execute(
                update(OBJECTS).where(OBJECTS.c.id.in_(ids)).values(local_removed_at=utcnow())
            )

    def forget(self, ids: Iterable[int]) -> None:
        """Remove the rows of orphans whose objects were deleted."""
        ids = list(ids)
        if not ids:
            return
        with self.catalog.transaction("forget deleted objects", write=True) as session:
            session.connection().execute(delete(OBJECTS).where(OBJECTS.c.id.in_(ids)))

    # -- reads -------------------------------------------------------------------------------

    def objects_of(self, recording_id: int) -> list[ObjectInfo]:
        statement = (
            select(OBJECTS).where(OBJECTS.c.recording_id == recording_id).order_by(OBJECTS.c.id)
        )
        with self.catalog.transaction(f"read the stored files of {recording_id}") as session:
            return [_info(r._mapping) for r in session.connection().execute(statement)]

    def object_for(self, recording_id: int, path: str) -> ObjectInfo | None:
        """The verified object of the recording's file ``path``, if there is one."""
        statement = (
            select(OBJECTS)
            .where(OBJECTS.c.recording_id == recording_id)
            .where(OBJECTS.c.path == path)
            .order_by(OBJECTS.c.id.desc())
            .limit(1)
        )
        with self.catalog.transaction(f"find the stored file of {recording_id}") as session:
            row = session.connection().execute(statement).first()
            return None if row is None else _info(row._mapping)

    def orphans(self, *, limit: int = 500) -> list[ObjectInfo]:
        statement = (
            select(OBJECTS)
            .where(OBJECTS.c.recording_id.is_(None))
            .order_by(OBJECTS.c.id)
            .limit(limit)
        )
        with self.catalog.transaction("look for orphaned objects") as session:
            return [_info(r._mapping) for r in session.connection().execute(statement)]

    def local_copies(
        self,
        *,
        uploaded_before: datetime | None = None,
        limit: int = 1000,
        node: str | None = None,
    ) -> list[ObjectInfo]:
        """Verified files (not sidecars) whose local copy was not removed, oldest upload
        first; only those uploaded before ``uploaded_before`` when given, and of ``node``'s
        recordings (or no node's) when given."""
        statement = (
            select(OBJECTS)
            .where(OBJECTS.c.local_removed_at.is_(None))
            .where(OBJECTS.c.recording_id.is_not(None))
            .where(OBJECTS.c.role != SIDECAR)
            .where(*_of_node(node))
        )
        if uploaded_before is not None:
            statement = statement.where(OBJECTS.c.uploaded_at < uploaded_before)
        statement = statement.order_by(OBJECTS.c.uploaded_at, OBJECTS.c.id).limit(limit)
        with self.catalog.transaction("look for local copies") as session:
            return [_info(r._mapping) for r in session.connection().execute(statement)]

    def cached_bytes(self, *, node: str | None = None) -> int:
        """Bytes of the verified files (not sidecars) whose local copy was not removed (of
        ``node``'s recordings, or no node's, when given)."""
        statement = (
            select(func.coalesce(func.sum(OBJECTS.c.size), 0))
            .where(OBJECTS.c.local_removed_at.is_(None))
            .where(OBJECTS.c.recording_id.is_not(None))
            .where(OBJECTS.c.role != SIDECAR)
            .where(*_of_node(node))
        )
        with self.catalog.transaction("measure the local cache") as session:
            return int(session.connection().execute(statement).scalar() or 0)

    def backlog(self) -> Backlog:
        """Finished recordings whose audio file has no verified object."""
        statement = select(func.count(), func.min(RECORDINGS.c.end_time)).where(*_unuploaded())
        with self.catalog.transaction("measure the upload backlog") as session:
            count, oldest = session.connection().execute(statement).one()
        return Backlog(count=int(count), oldest_end=oldest)

    def unuploaded(
        self, *, limit: int = 1000
    ) -> list[tuple[int, str | None, str | None, str | None]]:
        """(id, uid, sha256, node) of finished recordings whose audio has no verified object and
        no upload job (the ones a crash or a store outage kept from being queued, archive
        copies, and recordings from before the store was set)."""
        owner = func.coalesce(RECORDINGS.c.uid, literal("id-") + sql_cast(RECORDINGS.c.id, String))
        has_job = (
            select(JOBS.c.id)
            .where(JOBS.c.kind == UPLOAD_KIND)
            .where(
                JOBS.c.key
                == owner
                + literal(":")
                + func.coalesce(RECORDINGS.c.sha256, "")
                + func.coalesce(literal("@") + RECORDINGS.c.node, "")
            )
            .exists()
        )
        statement = (
            select(RECORDINGS.c.id, RECORDINGS.c.uid, RECORDINGS.c.sha256, RECORDINGS.c.node)
            .where(*_unuploaded())
            .where(~has_job)
            .order_by(RECORDINGS.c.id)
            .limit(limit)
        )
        with self.catalog.transaction("look for recordings to upload") as session:
            return [(int(i), u, s, n) for i, u, s, n in session.connection().execute(statement)]


def _of_node(node: str | None) -> list[Any]:
    """The objects of ``node``'s recordings and of those of no node (all when None)."""
    if node is None:
        return []
    theirs = (
        select(RECORDINGS.c.id)
        .where(RECORDINGS.c.id == OBJECTS.c.recording_id)
        .where(or_(RECORDINGS.c.node == node, RECORDINGS.c.node.is_(None)))
        .exists()
    )
    return [theirs]


def _unuploaded() -> list[Any]:
    uploaded = (
        select(OBJECTS.c.id)
        .where(
            and_(
                OBJECTS.c.recording_id == RECORDINGS.c.id,
                OBJECTS.c.path == RECORDINGS.c.path,
            )
        )
        .exists()
    )
    return [RECORDINGS.c.status.in_(FINAL_STATUSES), ~uploaded]


def _info(row: Any) -> ObjectInfo:
    return ObjectInfo(
        id=row["id"],
        recording_id=row["recording_id"],
        role=row["role"],
        path=row["path"],
        key=row["key"],
        size=row["size"],
        sha256=row["sha256"],
        uploaded_at=row["uploaded_at"],
        local_removed_at=row["local_removed_at"],
    )
