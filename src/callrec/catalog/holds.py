"""Legal holds, mixed into :class:`callrec.catalog.Catalog`: set, release, list, and the one
test every delete goes through (:func:`held_where`, :func:`check_not_held`).

A recording is held when an active hold names it (a hold on it, or on a search that found
it) or when an active rule hold covers it (its local or remote number, one of its tags).
The test runs inside the deleting transaction, after :func:`lock_for_delete`: on PostgreSQL
deletes take a shared advisory lock and a new hold the exclusive one, so a hold committed
while a sweep runs is seen by every delete after it, and none before it can miss it. (SQLite
has one writer at a time: the same order, for free.)
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    false,
    func,
    insert,
    not_,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from callrec.catalog.hooks import Recorded, RecordingEvents
from callrec.catalog.models import Recording
from callrec.catalog.policy import (
    HOLD_KINDS,
    HOLD_NUMBER,
    HOLD_RECORDING,
    HOLD_SEARCH,
    HOLD_TAG,
    HoldInfo,
    check_hold_value,
    check_reason,
)
from callrec.catalog.records import RecordingInfo, require_choice, utcnow
from callrec.catalog.retention import HeldRecording, LegalHold
from callrec.catalog.webmodels import RecordingTag
from callrec.exceptions import CatalogError, RecordingHeld

#: PostgreSQL advisory lock between deletes (shared) and new holds (exclusive): "callhold".
HOLD_LOCK_KEY = int.from_bytes(b"callhold", "big") & 0x7FFF_FFFF_FFFF_FFFF

#: Most recordings one hold on recordings or a search may name (a search hold is
#: resolved to ids when it is set).
MAX_HOLD_RECORDINGS = 100_000


def lock_for_delete(session: Session) -> None:
    """Before a delete reads the holds (see the module docstring)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": HOLD_LOCK_KEY})


def _lock_for_hold(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": HOLD_LOCK_KEY})


def _active() -> ColumnElement[bool]:
    return LegalHold.released_at.is_(None)


def held_where(session: Session) -> ColumnElement[bool]:
    """SQL true for a :class:`Recording` row under an active hold (in this transaction)."""
    rules = session.execute(
        select(LegalHold.kind, LegalHold.value).where(
            _active(), LegalHold.kind.in_((HOLD_NUMBER, HOLD_TAG))
        )
    ).all()
    numbers = sorted({v for k, v in rules if k == HOLD_NUMBER})
    tags = sorted({v for k, v in rules if k == HOLD_TAG})
    named = (
        select(HeldRecording.recording_id)
        .join(LegalHold, LegalHold.id == HeldRecording.hold_id)
        .where(_active())
    )
    clauses: list[ColumnElement[bool]] = [Recording.id.in_(named)]
    if numbers:
        clauses += [Recording.local_number.in_(numbers), Recording.remote_number.in_(numbers)]
    if tags:
        tagged = select(RecordingTag.recording_id).where(RecordingTag.tag.in_(tags))
        clauses.append(Recording.id.in_(tagged))
    return or_(false(), *clauses)


def check_not_held(session: Session, row: Recording) -> None:
    """Raise :class:`RecordingHeld` naming the holds when ``row`` is held."""
    holds = _holds_on(session, row.id, row.local_number, row.remote_number)
    if holds:
        said = "; ".join(f"hold {h.id} ({h.target}): {h.reason}" for h in holds)
        raise RecordingHeld(
            f"cannot delete recording {row.id}: it is under legal hold ({said}); "
            "release the hold first"
        )


def _holds_on(session: Session, rec_id: int, local: str, remote: str) -> list[HoldInfo]:
    tags = select(RecordingTag.tag).where(RecordingTag.recording_id == rec_id)
    named = select(HeldRecording.hold_id).where(HeldRecording.recording_id == rec_id)
    numbers = [n for n in (local, remote) if n]
    statement = (
        select(LegalHold)
        .where(
            _active(),
            or_(
                LegalHold.id.in_(named),
                (LegalHold.kind == HOLD_NUMBER) & LegalHold.value.in_(numbers or [""]),
                (LegalHold.kind == HOLD_TAG) & LegalHold.value.in_(tags),
            ),
        )
        .order_by(LegalHold.id)
    )
    rows = list(session.scalars(statement))
    return _infos(session, rows)


def _infos(session: Session, rows: list[LegalHold]) -> list[HoldInfo]:
    counts: dict[int, int] = {}
    ids = [r.id for r in rows if r.kind in (HOLD_RECORDING, HOLD_SEARCH)]
    if ids:
        statement = (
            select(HeldRecording.hold_id, func.count())
            .where(HeldRecording.hold_id.in_(ids))
            .group_by(HeldRecording.hold_id)
        )
        counts = {hold_id: int(n) for hold_id, n in session.execute(statement)}
    return [
        HoldInfo(
            id=r.id,
            kind=r.kind,
            value=r.value,
            query=dict(r.query or {}),
            reason=r.reason,
            created_by=r.created_by,
            created_at=r.created_at,
            released_at=r.released_at,
            released_by=r.released_by,
            recordings=counts.get(r.id, 0),
        )
        for r in rows
    ]


def _newly_held(session: Session, kind: str, value: str, ids: list[int]) -> list[Recorded]:
    """The (id, uid) of the recordings a new hold of ``kind`` on ``value`` or ``ids`` covers
    that no active hold covers yet (before the new hold is written)."""
    unheld = not_(held_where(session))
    found: list[Recorded] = []
    columns = (Recording.id, Recording.uid)
    if kind in (HOLD_RECORDING, HOLD_SEARCH):
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            statement = select(*columns).where(Recording.id.in_(chunk), unheld)
            found += [(i, u) for i, u in session.execute(statement)]
        return found
    if kind == HOLD_NUMBER:
        covers = or_(Recording.local_number == value, Recording.remote_number == value)
    else:
        tagged = select(RecordingTag.recording_id).where(RecordingTag.tag == value)
        covers = Recording.id.in_(tagged)
    statement = select(*columns).where(covers, unheld).order_by(Recording.id)
    return [(i, u) for i, u in session.execute(statement)]


class HoldQueries:
    """Legal holds: set, release, list, and which recordings are held."""

    if TYPE_CHECKING:

        def _session(self, *, write: bool = False) -> AbstractContextManager[Session]: ...

        def _guard(self, action: str) -> AbstractContextManager[None]: ...

        _engine: Engine

    def add_hold(
        self,
        kind: str,
        *,
        reason: str,
        by: str,
        value: str = "",
        recording_ids: Iterable[int] = (),
        query: dict[str, Any] | None = None,
        events: RecordingEvents | None = None,
    ) -> HoldInfo:
        """Set a hold. ``recording`` and ``search`` holds name ``recording_ids`` (a search is
        resolved by the caller, with its scope; ``query`` keeps its filters for the record);
        ``number`` and ``tag`` holds cover ``value`` from now on, recordings made later too.
        ``events``: told, in this transaction, of the recordings no hold held before
        (``recording.held`` webhooks, :mod:`.hooks`)."""
        require_choice("kind", kind, HOLD_KINDS)
        why = check_reason(reason)
        clean = check_hold_value(kind, value)
        ids = sorted(set(recording_ids))
        if kind in (HOLD_RECORDING, HOLD_SEARCH):
            if not ids:
                raise CatalogError("a hold on recordings needs at least one recording")
            if len(ids) > MAX_HOLD_RECORDINGS:
                raise CatalogError(f"one hold names at most {MAX_HOLD_RECORDINGS} recordings")
        elif ids:
            raise CatalogError(f"a {kind} hold names no recordings")
        if not by.strip():
            raise CatalogError("a hold needs the name of who sets it")
        with self._guard(f"set a {kind} hold"), self._session(write=True) as session:
            _lock_for_hold(session)
            if ids:
                found: set[int] = set()
                for start in range(0, len(ids), 1000):
                    chunk = ids[start : start + 1000]
                    found.update(
                        session.scalars(select(Recording.id).where(Recording.id.in_(chunk)))
                    )
                missing = [i for i in ids if i not in found]
                if missing:
                    shown = ", ".join(str(i) for i in missing[:10])
                    raise CatalogError(f"cannot hold: no recording {shown}")
            # Under the exclusive hold lock: no other hold comes or goes until this commits.
            newly = _newly_held(session, kind, clean, ids) if events is not None else []
            row = LegalHold(
                kind=kind, value=clean, query=dict(query or {}), reason=why, created_by=by.strip()
            )
            session.add(row)
            session.flush()
            if ids:
                session.execute(
                    insert(HeldRecording),
                    [{"hold_id": row.id, "recording_id": i} for i in ids],
                )
            info = _infos(session, [row])[0]
            if events is not None:
                events.held(session.connection(), info, newly)
            return info

    def release_hold(self, hold_id: int, *, by: str) -> HoldInfo:
        """Release an active hold (it stays listed, stamped with who and when)."""
        with self._guard(f"release hold {hold_id}"), self._session(write=True) as session:
            _lock_for_hold(session)
            row = session.get(LegalHold, hold_id, with_for_update=True)
            if row is None:
                raise CatalogError(f"no legal hold {hold_id}")
            if row.released_at is not None:
                raise CatalogError(
                    f"legal hold {hold_id} was already released by {row.released_by} "
                    f"at {row.released_at.isoformat(timespec='seconds')}"
                )
            session.execute(
                update(LegalHold)
                .where(LegalHold.id == hold_id)
                .values(released_at=utcnow(), released_by=by.strip() or "?")
            )
            session.refresh(row)
            return _infos(session, [row])[0]

    def get_hold(self, hold_id: int) -> HoldInfo | None:
        with self._guard(f"read hold {hold_id}"), self._session() as session:
            row = session.get(LegalHold, hold_id)
            return None if row is None else _infos(session, [row])[0]

    def holds(self, *, include_released: bool = False) -> list[HoldInfo]:
        """Holds, newest first; only active ones unless ``include_released``."""
        statement = select(LegalHold).order_by(LegalHold.id.desc())
        if not include_released:
            statement = statement.where(_active())
        with self._guard("list legal holds"), self._session() as session:
            return _infos(session, list(session.scalars(statement)))

    def holds_on(self, rec: RecordingInfo) -> list[HoldInfo]:
        """The active holds covering ``rec``."""
        with self._guard(f"read the holds on {rec.id}"), self._session() as session:
            return _holds_on(session, rec.id, rec.local_number, rec.remote_number)

    def is_held(self, rec: RecordingInfo) -> bool:
        """Whether an active hold covers ``rec`` (what every delete checks)."""
        return bool(self.holds_on(rec))

    def held_ids(self, rec_ids: Iterable[int]) -> set[int]:
        """Which of ``rec_ids`` are held (for marking a page of the list)."""
        ids = sorted(set(rec_ids))
        if not ids:
            return set()
        with self._guard("read legal holds"), self._session() as session:
            statement = select(Recording.id).where(Recording.id.in_(ids), held_where(session))
            return set(session.scalars(statement))
