"""The catalogue's queries for what the web does with recordings, mixed into
:class:`callrec.catalog.Catalog`: scoped search and fetches, notes, tags, deletion, counts.

Every recording query takes the caller's :class:`Scope` and applies it in SQL, so a restricted
user's search, count, fetch, ZIP and tag list never see another extension's rows, not even
as a count. Callers check roles (admin or not); the catalogue checks data.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    any_,
    column,
    delete,
    func,
    literal,
    literal_column,
    or_,
    select,
    table,
)
from sqlalchemy.orm import Session

from callrec.catalog import search_index, transcripts
from callrec.catalog.holds import check_not_held, lock_for_delete
from callrec.catalog.hooks import RecordingEvents
from callrec.catalog.mappers import note_info, recording_info
from callrec.catalog.models import Recording
from callrec.catalog.policy import TombstoneInfo
from callrec.catalog.records import STATUS_RECORDING, RecordingInfo, require_aware
from callrec.catalog.retirement import retire_rows
from callrec.catalog.webmodels import Note, RecordingTag
from callrec.catalog.webrecords import (
    COUNT_CAP,
    MAX_ID,
    MAX_NOTE_LENGTH,
    NoteInfo,
    Scope,
    SearchPage,
    SearchQuery,
    UserInfo,
    normalise_tag,
)
from callrec.exceptions import CatalogError


class BrowsingQueries:
    """Scoped searches and fetches, notes, tags, deletion and counts of recordings."""

    if TYPE_CHECKING:

        def _session(self, *, write: bool = False) -> AbstractContextManager[Session]: ...

        def _guard(self, action: str) -> AbstractContextManager[None]: ...

        _engine: Engine

    # -- notes and tags -------------------------------------------------------------------

    def add_note(self, rec_id: int, *, user: UserInfo, text: str) -> NoteInfo:
        body = text.strip()
        if not body or len(body) > MAX_NOTE_LENGTH:
            raise CatalogError(f"a note must have 1-{MAX_NOTE_LENGTH} characters")
        with self._guard(f"add a note to {rec_id}"), self._session(write=True) as session:
            if session.get(Recording, rec_id) is None:
                raise CatalogError(f"cannot add a note: no recording {rec_id}")
            row = Note(recording_id=rec_id, user_id=user.id, username=user.username, text=body)
            session.add(row)
            session.flush()
            return note_info(row)

    def notes(self, rec_id: int) -> list[NoteInfo]:
        statement = select(Note).where(Note.recording_id == rec_id).order_by(Note.id)
        with self._guard(f"read the notes of {rec_id}"), self._session() as session:
            return [note_info(row) for row in session.scalars(statement)]

    def get_note(self, note_id: int) -> NoteInfo | None:
        with self._guard(f"read note {note_id}"), self._session() as session:
            row = session.get(Note, note_id)
            return None if row is None else note_info(row)

    def delete_note(self, note_id: int) -> bool:
        with self._guard(f"delete note {note_id}"), self._session(write=True) as session:
            result = session.execute(delete(Note).where(Note.id == note_id))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def add_tag(self, rec_id: int, tag: str) -> bool:
        """Tag a recording; False when it already had the tag."""
        name = normalise_tag(tag)
        with self._guard(f"tag {rec_id}"), self._session(write=True) as session:
            if session.get(Recording, rec_id) is None:
                raise CatalogError(f"cannot tag: no recording {rec_id}")
            if session.get(RecordingTag, (rec_id, name)) is not None:
                return False
            session.add(RecordingTag(recording_id=rec_id, tag=name))
            return True

    def remove_tag(self, rec_id: int, tag: str) -> bool:
        name = tag.strip().lower()
        statement = delete(RecordingTag).where(
            RecordingTag.recording_id == rec_id, RecordingTag.tag == name
        )
        with self._guard(f"untag {rec_id}"), self._session(write=True) as session:
            return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]

    def tags_of(self, rec_ids: Iterable[int]) -> dict[int, list[str]]:
        """Recording id -> its tags, sorted (ids without tags are absent)."""
        ids = sorted(set(rec_ids))
        out: dict[int, list[str]] = {}
        if not ids:
            return out
        statement = (
            select(RecordingTag.recording_id, RecordingTag.tag)
            .where(RecordingTag.recording_id.in_(ids))
            .order_by(RecordingTag.recording_id, RecordingTag.tag)
        )
        with self._guard("read tags"), self._session() as session:
            for rec_id, tag in session.execute(statement):
                out.setdefault(rec_id, []).append(tag)
        return out

    def tag_counts(self, scope: Scope | None = None) -> list[tuple[str, int]]:
        """Every tag on a recording the scope allows, with how many, most used first."""
        statement = (
            select(RecordingTag.tag, func.count())
            .join(Recording, Recording.id == RecordingTag.recording_id)
            .where(*_scope_where(scope))
            .group_by(RecordingTag.tag)
            .order_by(func.count().desc(), RecordingTag.tag)
        )
        with self._guard("count tags"), self._session() as session:
            return [(tag, int(n)) for tag, n in session.execute(statement)]

    # -- recordings, scoped ---------------------------------------------------------------

    def search(self, query: SearchQuery, scope: Scope | None = None) -> SearchPage:
        """One page of the recordings matching ``query`` that ``scope`` allows."""
        where = [*_search_where(query, self._engine.dialect.name), *_scope_where(scope)]
        key, descending = _sort_key(query.sort)
        position: _Position | None = None
        if query.cursor is not None:
            position = _decode_cursor(query.cursor, query.sort)
        elif query.at is not None:
            # Id 0 is before every row: the page begins with the first row past the moment.
            position = _Position(value=query.at, last_id=0, backward=False)
        backward = position is not None and position.backward
        page_where = list(where)
        if position is not None:
            page_where.append(_beyond(key, descending, position, forward=not backward))
        # A page before a position is read in the reverse order, then turned round.
        read_descending = descending != backward
        order = (key.desc(), Recording.id.desc()) if read_descending else (key.asc(), Recording.id)
        statement = select(Recording).where(*page_where).order_by(*order).limit(query.limit + 1)
        if query.page is not None:
            statement = statement.offset((query.page - 1) * query.limit)
        first_page = position is None and (query.page or 1) == 1
        name = query.sort.lstrip("-")
        with self._guard("search recordings"), self._session() as session:
            rows = list(session.scalars(statement))
            more = len(rows) > query.limit
            rows = rows[: query.limit]
            if backward:
                rows.reverse()
            first = _position_of(name, rows[0]) if rows else position
            last = _position_of(name, rows[-1]) if rows else position

            def exists_beyond(at: _Position | None, *, forward: bool) -> bool:
                if at is None:
                    return False
                probe = select(Recording.id).where(
                    *where, _beyond(key, descending, at, forward=forward)
                )
                return session.scalar(probe.limit(1)) is not None

            has_next = exists_beyond(last, forward=True) if backward else more
            has_prev = more if backward else not first_page and exists_beyond(first, forward=False)
            items = [recording_info(row) for row in rows]
            phrases = [p for p in (query.said, *query.words) if p]
            snippets = transcripts.read_snippets(session, [i.id for i in items], phrases)
            total: int | None = None
            offset: int | None = None
            if query.with_total:
                total = _capped_count(session, where)
                if position is None:
                    offset = ((query.page or 1) - 1) * query.limit
                elif not has_prev:
                    offset = 0
                elif first is not None:
                    before = _capped_count(
                        session, [*where, _beyond(key, descending, first, forward=False)]
                    )
                    offset = before if before <= COUNT_CAP else None
        return SearchPage(
            items=items,
            next_cursor=_encode_cursor(query.sort, last) if has_next and last else None,
            prev_cursor=_encode_cursor(query.sort, first, backward=True)
            if has_prev and first
            else None,
            total=None if total is None else min(total, COUNT_CAP),
            total_exact=total is None or total <= COUNT_CAP,
            offset=offset,
            snippets=snippets,
        )

    def get_visible(self, rec_id: int, scope: Scope | None) -> RecordingInfo | None:
        """The recording, if it exists and ``scope`` allows it."""
        statement = select(Recording).where(Recording.id == rec_id, *_scope_where(scope))
        with self._guard(f"read recording {rec_id}"), self._session() as session:
            row = session.scalar(statement)
            return None if row is None else recording_info(row)

    def get_many_visible(self, rec_ids: Iterable[int], scope: Scope | None) -> list[RecordingInfo]:
        """The recordings among ``rec_ids`` that exist and ``scope`` allows, newest first."""
        ids = sorted(set(rec_ids))
        if not ids:
            return []
        statement = (
            select(Recording)
            .where(Recording.id.in_(ids), *_scope_where(scope))
            .order_by(Recording.start_time.desc(), Recording.id.desc())
        )
        with self._guard("read recordings"), self._session() as session:
            return [recording_info(row) for row in session.scalars(statement)]

    def delete_recording(
        self,
        rec_id: int,
        *,
        by: str = "",
        reason: str = "",
        events: RecordingEvents | None = None,
    ) -> RecordingInfo:
        """Remove a finished recording's row with its notes and tags; returns what it was.
        (The caller removes the files, then marks the tombstone: :meth:`retire_recording`.)
        One still being recorded is refused, and one under legal hold
        (:class:`~callrec.exceptions.RecordingHeld`): every delete path comes here. The hash
        chain gets a ``deleted`` entry saying who (``by``) and why (``reason``): retire_rows."""
        return self.retire_recording(rec_id, by=by, reason=reason, events=events)[0]

    def retire_recording(
        self,
        rec_id: int,
        *,
        by: str = "",
        reason: str = "",
        events: RecordingEvents | None = None,
    ) -> tuple[RecordingInfo, TombstoneInfo]:
        """:meth:`delete_recording`, also returning the tombstone it left (``by``: who).
        ``events``: told of the delete in its transaction (``recording.deleted``)."""
        with self._guard(f"delete recording {rec_id}"), self._session(write=True) as session:
            lock_for_delete(session)
            row = session.get(Recording, rec_id, with_for_update=True)
            if row is None:
                raise CatalogError(f"cannot delete recording {rec_id}: no such recording")
            if row.status == STATUS_RECORDING:
                raise CatalogError(f"cannot delete recording {rec_id}: it is still recording")
            # The one legal-hold check of every delete path (web, API, bulk, CLI, sweeps).
            check_not_held(session, row)
            info = recording_info(row)
            (tomb,) = retire_rows(
                session,
                [row],
                by=by or "unknown",
                reasons={rec_id: reason},
                audit=False,
                events=events,
            )
            return info, tomb

    def status_counts(self) -> dict[str, int]:
        """Recordings per status (for metrics)."""
        statement = select(Recording.status, func.count()).group_by(Recording.status)
        with self._guard("count recordings by status"), self._session() as session:
            return {status: int(n) for status, n in session.execute(statement)}

    def devices_seen(self, scope: Scope | None = None) -> list[str]:
        """Distinct devices of the recordings the scope allows (for the filter list)."""
        statement = (
            select(Recording.device).where(*_scope_where(scope)).distinct().order_by("device")
        )
        with self._guard("list devices"), self._session() as session:
            return [d for d in session.scalars(statement) if d]

    def nodes_seen(self) -> list[str]:
        """Distinct nodes that recorded (for the filter list and the node column; the names
        of the servers are no secret of a restricted user's calls)."""
        statement = select(Recording.node).where(Recording.node.is_not(None)).distinct()
        with self._guard("list nodes"), self._session() as session:
            return sorted(n for n in session.scalars(statement) if n)


def _scope_where(scope: Scope | None) -> list[ColumnElement[bool]]:
    if scope is None or scope.unrestricted:
        return []
    allowed: list[ColumnElement[bool]] = []
    if scope.extensions:
        allowed.append(Recording.local_number.in_(scope.extensions))
        allowed.append(Recording.remote_number.in_(scope.extensions))
    if scope.devices:
        allowed.append(func.lower(Recording.device).in_(scope.devices))
    return [or_(*allowed)]


_TEXT_COLUMNS = (
    Recording.local_number,
    Recording.remote_number,
    Recording.local_name,
    Recording.remote_name,
    Recording.device,
)


_FTS = table(search_index.FTS_TABLE, column("rowid"))
_PG_SEARCH_TEXT: ColumnElement[str] = literal_column(f"lower{search_index.SEARCH_TEXT_SQL}")


def _word_where(word: str, dialect: str) -> ColumnElement[bool]:
    """Rows whose numbers, names or device contain ``word`` (through the trigram index where
    one can help, see :mod:`callrec.catalog.search_index`), or whose transcript has it.

    On PostgreSQL the transcript's ids come as an array computed once (``id = ANY(ARRAY(
    SELECT ...))``): ORed with ``id IN (SELECT ...)`` instead, the planner can use neither the
    trigram index (a rare number took 976 ms instead of 23 ms in 200,000 rows, see
    docs/transcription.md); an array is a value the primary key's index takes."""
    found = _text_where(word, dialect)
    said = transcripts.said_ids(word, dialect)
    if said is None:
        return found
    if dialect == "postgresql":
        return or_(found, Recording.id == any_(func.array(said.scalar_subquery())))
    return or_(found, Recording.id.in_(said))


def _text_where(word: str, dialect: str) -> ColumnElement[bool]:
    if len(word) >= search_index.MIN_INDEXED:
        if dialect == "sqlite":
            phrase = '"' + word.replace('"', '""') + '"'
            match = literal_column(search_index.FTS_TABLE).op("MATCH")(phrase)
            return Recording.id.in_(select(_FTS.c.rowid).where(match))
        if dialect == "postgresql":
            # Backslash is PostgreSQL's default LIKE escape; the index matches no ESCAPE clause.
            escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            return _PG_SEARCH_TEXT.like(func.lower(f"%{escaped}%"))
    return or_(*(c.icontains(word, autoescape=True) for c in _TEXT_COLUMNS))


def _search_where(query: SearchQuery, dialect: str) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [_word_where(word, dialect) for word in query.words]
    if query.said:
        said = transcripts.transcript_match(query.said, dialect)
        if said is None:
            raise CatalogError(f"said {query.said[:40]!r} has no word to look for")
        where.append(said)
    if query.since is not None:
        where.append(Recording.start_time >= query.since)
    if query.until is not None:
        where.append(Recording.start_time < query.until)
    if query.direction is not None:
        where.append(Recording.direction == query.direction)
    if query.device:
        where.append(func.lower(Recording.device) == query.device.strip().lower())
    if query.node:
        where.append(Recording.node == query.node.strip())
    if query.codec:
        where.append(Recording.codec == query.codec.strip().upper())
    if query.status is not None:
        where.append(Recording.status == query.status)
    if query.source is not None:
        where.append(Recording.source == query.source)
    if query.min_duration is not None:
        where.append(Recording.duration >= query.min_duration)
    if query.max_duration is not None:
        where.append(Recording.duration <= query.max_duration)
    if query.tag:
        # IN, not a correlated EXISTS: the tag index gives the few ids at once.
        tagged = select(RecordingTag.recording_id).where(RecordingTag.tag == query.tag)
        where.append(Recording.id.in_(tagged))
    return where


def _sort_key(sort: str) -> tuple[ColumnElement[Any], bool]:
    descending = sort.startswith("-")
    name = sort.lstrip("-")
    if name == "duration":
        # Rows still recording have no duration yet; they sort as the shortest.
        return func.coalesce(Recording.duration, literal(-1.0)), descending
    column: ColumnElement[Any] = getattr(Recording, name)
    return column, descending


@dataclass(frozen=True, slots=True)
class _Position:
    """A place in a search's order: between the row with this sort value and id and the
    next; ``backward`` for a cursor that asks for the page before it."""

    value: Any
    last_id: int
    backward: bool = False


def _position_of(name: str, row: Recording) -> _Position:
    value: Any = getattr(row, name)
    if name == "duration" and value is None:
        value = -1.0
    return _Position(value=value, last_id=row.id)


def _beyond(
    key: ColumnElement[Any], descending: bool, at: _Position, *, forward: bool
) -> ColumnElement[bool]:
    """Rows after ``at`` in the order shown (``forward``), or before it.

    The bound on ``key`` alone is redundant but not idle: without it SQLite reads the OR as
    no range on the sort's index, and walks the index from its far end (every row older
    than a page, to read the page before it)."""
    if descending == forward:
        return and_(key <= at.value, or_(key < at.value, Recording.id < at.last_id))
    return and_(key >= at.value, or_(key > at.value, Recording.id > at.last_id))


def _capped_count(session: Session, where: list[ColumnElement[bool]]) -> int:
    """Matches of ``where``, counted up to one past :data:`COUNT_CAP`."""
    capped = select(Recording.id).where(*where).limit(COUNT_CAP + 1).subquery()
    return session.scalar(select(func.count()).select_from(capped)) or 0


def _encode_cursor(sort: str, at: _Position, *, backward: bool = False) -> str:
    value = at.value.isoformat() if isinstance(at.value, datetime) else at.value
    data: dict[str, Any] = {"s": sort, "v": value, "i": at.last_id}
    if backward:
        data["b"] = 1
    raw = json.dumps(data, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str) -> _Position:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        value, last_id, cursor_sort = data["v"], int(data["i"]), data["s"]
        backward = bool(data.get("b", 0))
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise CatalogError(f"invalid cursor {cursor[:40]!r}") from exc
    if not 0 <= last_id <= MAX_ID:  # a made-up cursor: no such row, and no query for it
        raise CatalogError(f"invalid cursor {cursor[:40]!r}")
    if cursor_sort != sort:
        raise CatalogError(f"the cursor belongs to sort {cursor_sort!r}, not {sort!r}")
    try:
        if sort.lstrip("-") == "start_time":
            value = datetime.fromisoformat(value)
            require_aware("cursor", value)
        elif sort.lstrip("-") == "duration":
            value = float(value)
        else:
            value = str(value)
    except (ValueError, TypeError, CatalogError) as exc:
        raise CatalogError(f"invalid cursor {cursor[:40]!r}") from exc
    return _Position(value=value, last_id=last_id, backward=backward)
