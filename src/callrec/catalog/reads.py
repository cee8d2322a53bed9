"""The catalogue's reads of recording rows, unscoped, mixed into :class:`callrec.catalog.Catalog`:
one row by id, the rows a crash left unfinished, an imported file's original, and a filtered
find and count (for the engine, the USB importer and the command line; the web reads through
the scoped queries of :mod:`callrec.catalog.browsing`)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from callrec.catalog.mappers import recording_info
from callrec.catalog.models import Recording
from callrec.catalog.records import (
    DIRECTIONS,
    STATUS_RECORDING,
    STATUSES,
    RecordingInfo,
    require_aware,
    require_choice,
    require_sha256,
)
from callrec.exceptions import CatalogError


class RecordingReads:
    """Recording rows by id, unfinished, by original file, and by filters."""

    if TYPE_CHECKING:

        def _session(self, *, write: bool = False) -> AbstractContextManager[Session]: ...

        def _guard(self, action: str) -> AbstractContextManager[None]: ...

    def get(self, rec_id: int) -> RecordingInfo | None:
        """The row with this id, or None."""
        with self._guard(f"read recording {rec_id}"), self._session() as session:
            row = session.get(Recording, rec_id)
            return None if row is None else recording_info(row)

    def get_uid(self, uid: str) -> RecordingInfo | None:
        """The row of the recording the engine named ``uid``, or None (not catalogued yet)."""
        statement = select(Recording).where(Recording.uid == uid)
        with self._guard(f"read recording {uid}"), self._session() as session:
            row = session.scalars(statement).first()
            return None if row is None else recording_info(row)

    def count_recordings(self) -> int:
        """How many rows there are (an empty catalogue is rebuilt from the disk at start)."""
        with self._guard("count recordings"), self._session() as session:
            return int(session.scalar(select(func.count()).select_from(Recording)) or 0)

    def unfinished(self, node: str | None = None) -> list[RecordingInfo]:
        """Rows still in status ``recording``: after a start-up, those a crash left behind.
        With ``node``, only that node's and those of no node (from before nodes): another
        node's open rows are its calls in progress, or its own to recover when it restarts."""
        statement = (
            select(Recording).where(Recording.status == STATUS_RECORDING).order_by(Recording.id)
        )
        if node is not None:
            statement = statement.where(or_(Recording.node == node, Recording.node.is_(None)))
        with self._guard("list unfinished recordings"), self._session() as session:
            return [recording_info(row) for row in session.scalars(statement)]

    def find_original(self, sha256: str) -> RecordingInfo | None:
        """The first recording imported from a file with this SHA-256, or None (issue 3)."""
        require_sha256(sha256)
        statement = (
            select(Recording)
            .where(Recording.original_sha256 == sha256)
            .order_by(Recording.id)
            .limit(1)
        )
        with self._guard("look up an imported file"), self._session() as session:
            row = session.scalars(statement).first()
            return None if row is None else recording_info(row)

    def find(
        self,
        *,
        number: str | None = None,
        device: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        status: str | None = None,
        direction: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RecordingInfo]:
        """Rows matching every given filter, newest start first (ties: newest id first).

        ``number`` is a case-insensitive substring of the local or the remote number (``%``
        and ``_`` match themselves); ``device`` is matched exactly;
        ``since <= start_time < until``.
        """
        if limit < 0 or offset < 0:
            raise CatalogError(f"limit and offset must be >= 0, got {limit} and {offset}")
        where = _filters(number, device, since, until, status, direction)
        statement = (
            select(Recording)
            .where(*where)
            .order_by(Recording.start_time.desc(), Recording.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._guard("search recordings"), self._session() as session:
            return [recording_info(row) for row in session.scalars(statement)]

    def count(
        self,
        *,
        number: str | None = None,
        device: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        status: str | None = None,
        direction: str | None = None,
    ) -> int:
        """How many rows :meth:`find` would return without limit and offset."""
        where = _filters(number, device, since, until, status, direction)
        statement = select(func.count()).select_from(Recording).where(*where)
        with self._guard("count recordings"), self._session() as session:
            return session.scalar(statement) or 0


def _filters(
    number: str | None,
    device: str | None,
    since: datetime | None,
    until: datetime | None,
    status: str | None,
    direction: str | None,
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if number:
        where.append(
            or_(
                Recording.local_number.icontains(number, autoescape=True),
                Recording.remote_number.icontains(number, autoescape=True),
            )
        )
    if device is not None:
        where.append(Recording.device == device)
    if since is not None:
        require_aware("since", since)
        where.append(Recording.start_time >= since)
    if until is not None:
        require_aware("until", until)
        where.append(Recording.start_time < until)
    if status is not None:
        require_choice("status", status, STATUSES)
        where.append(Recording.status == status)
    if direction is not None:
        require_choice("direction", direction, DIRECTIONS)
        where.append(Recording.direction == direction)
    return where
