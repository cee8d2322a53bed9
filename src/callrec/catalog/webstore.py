"""The catalogue's queries for the web front end, mixed into :class:`callrec.catalog.Catalog`.

Every recording query takes the caller's :class:`Scope` and applies it in SQL, so a restricted
user's search, count, fetch, ZIP and tag list never see another extension's rows, not even
as a count. Callers check roles (admin or not); the catalogue checks data.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    column,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    table,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from callrec.catalog import search_index
from callrec.catalog.mappers import audit_info, note_info, recording_info, token_info, user_info
from callrec.catalog.models import Recording
from callrec.catalog.records import STATUS_RECORDING, RecordingInfo, require_aware, utcnow
from callrec.catalog.webmodels import ApiToken, AuditEntry, Note, RecordingTag, User, WebSession
from callrec.catalog.webrecords import (
    AUDIT_ACTIONS,
    COUNT_CAP,
    MAX_NOTE_LENGTH,
    ROLE_ADMIN,
    ROLES,
    AuditInfo,
    NewAuditEntry,
    NoteInfo,
    Scope,
    SearchPage,
    SearchQuery,
    TokenInfo,
    UserInfo,
    normalise_tag,
    normalise_username,
)
from callrec.exceptions import CatalogError

#: last_used_at / last_seen_at are written at most this often per token or session, so that a
#: script polling the API does not turn every read into a write.
TOUCH_INTERVAL_SECONDS = 60


class WebQueries:
    """Users, tokens, sessions, audit log, notes, tags and scoped searches."""

    if TYPE_CHECKING:

        def _session(self, *, write: bool = False) -> AbstractContextManager[Session]: ...

        def _guard(self, action: str) -> AbstractContextManager[None]: ...

        _engine: Engine

    # -- users ----------------------------------------------------------------------------

    def create_user(
        self,
        username: str,
        *,
        password_hash: str,
        role: str,
        extensions: Sequence[str] = (),
        devices: Sequence[str] = (),
        must_change_password: bool = False,
    ) -> UserInfo:
        """Add a user; refuses a name that exists (whatever its case)."""
        name = normalise_username(username)
        _require_role(role)
        scope = Scope(extensions=tuple(extensions), devices=tuple(devices))
        row = User(
            username=name,
            password_hash=password_hash,
            role=role,
            extensions=list(scope.extensions),
            devices=list(scope.devices),
            must_change_password=must_change_password,
        )
        with self._guard("create a user"):
            try:
                with self._session(write=True) as session:
                    session.add(row)
                    session.flush()
                    return user_info(row)
            except IntegrityError as exc:
                raise CatalogError(f"cannot create user: {name!r} already exists") from exc

    def count_users(self) -> int:
        with self._guard("count users"), self._session() as session:
            return session.scalar(select(func.count()).select_from(User)) or 0

    def list_users(self) -> list[UserInfo]:
        with self._guard("list users"), self._session() as session:
            return [user_info(u) for u in session.scalars(select(User).order_by(User.username))]

    def get_user(self, user_id: int) -> UserInfo | None:
        with self._guard(f"read user {user_id}"), self._session() as session:
            row = session.get(User, user_id)
            return None if row is None else user_info(row)

    def get_user_by_name(self, username: str) -> UserInfo | None:
        name = username.strip().lower()
        with self._guard("read a user"), self._session() as session:
            row = session.scalar(select(User).where(User.username == name))
            return None if row is None else user_info(row)

    def user_credentials(self, username: str) -> tuple[UserInfo, str] | None:
        """The user and their password hash, for signing in; None for an unknown name."""
        name = username.strip().lower()
        with self._guard("read credentials"), self._session() as session:
            row = session.scalar(select(User).where(User.username == name))
            return None if row is None else (user_info(row), row.password_hash)

    def update_user(
        self,
        user_id: int,
        *,
        role: str | None = None,
        extensions: Sequence[str] | None = None,
        devices: Sequence[str] | None = None,
        password_hash: str | None = None,
        must_change_password: bool | None = None,
        keep_session: str | None = None,
    ) -> UserInfo:
        """Change what is given. A new password ends the user's browser sessions (but
        ``keep_session``, the hash of the one that changed it); the last admin stays admin."""
        if role is not None:
            _require_role(role)
        with self._guard(f"update user {user_id}"), self._session(write=True) as session:
            row = session.get(User, user_id, with_for_update=True)
            if row is None:
                raise CatalogError(f"cannot update user {user_id}: no such user")
            if role is not None and role != row.role:
                if row.role == ROLE_ADMIN and _admins(session) <= 1:
                    raise CatalogError(f"cannot make {row.username} a {role}: the last admin")
                row.role = role
            if extensions is not None or devices is not None:
                scope = Scope(
                    extensions=tuple(row.extensions if extensions is None else extensions),
                    devices=tuple(row.devices if devices is None else devices),
                )
                row.extensions = list(scope.extensions)
                row.devices = list(scope.devices)
            if password_hash is not None:
                row.password_hash = password_hash
                gone = delete(WebSession).where(WebSession.user_id == user_id)
                if keep_session is not None:
                    gone = gone.where(WebSession.token_hash != keep_session)
                session.execute(gone)
            if must_change_password is not None:
                row.must_change_password = must_change_password
            session.flush()
            return user_info(row)

    def delete_user(self, user_id: int) -> UserInfo:
        """Remove a user with their tokens and sessions (not their audit rows or notes)."""
        with self._guard(f"delete user {user_id}"), self._session(write=True) as session:
            row = session.get(User, user_id, with_for_update=True)
            if row is None:
                raise CatalogError(f"cannot delete user {user_id}: no such user")
            if row.role == ROLE_ADMIN and _admins(session) <= 1:
                raise CatalogError(f"cannot delete {row.username}: the last admin")
            info = user_info(row)
            session.delete(row)
            return info

    def record_login(self, user_id: int) -> None:
        with self._guard("record a sign-in"), self._session(write=True) as session:
            session.execute(update(User).where(User.id == user_id).values(last_login_at=utcnow()))

    # -- API tokens -----------------------------------------------------------------------

    def create_token(
        self,
        user_id: int,
        *,
        name: str,
        token_hash: str,
        prefix: str,
        expires_at: datetime | None = None,
    ) -> TokenInfo:
        if expires_at is not None:
            require_aware("expires_at", expires_at)
        with self._guard("create an API token"), self._session(write=True) as session:
            user = session.get(User, user_id)
            if user is None:
                raise CatalogError(f"cannot create a token: no user {user_id}")
            row = ApiToken(
                user_id=user_id,
                name=name.strip()[:100],
                token_hash=token_hash,
                prefix=prefix,
                expires_at=expires_at,
            )
            session.add(row)
            session.flush()
            return token_info(row, user.username)

    def list_tokens(self, user_id: int | None = None) -> list[TokenInfo]:
        """Every token, or one user's."""
        statement = select(ApiToken, User.username).join(User).order_by(ApiToken.id)
        if user_id is not None:
            statement = statement.where(ApiToken.user_id == user_id)
        with self._guard("list API tokens"), self._session() as session:
            return [token_info(t, name) for t, name in session.execute(statement)]

    def delete_token(self, token_id: int, *, user_id: int | None = None) -> bool:
        """Revoke a token (only the given user's, when ``user_id`` is set)."""
        statement = delete(ApiToken).where(ApiToken.id == token_id)
        if user_id is not None:
            statement = statement.where(ApiToken.user_id == user_id)
        with self._guard("revoke an API token"), self._session(write=True) as session:
            return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]

    def user_for_token(self, token_hash: str, now: datetime) -> UserInfo | None:
        """The user a valid, unexpired token acts as; notes when it was used."""
        found = self.check_token(token_hash, now)
        if found is None:
            return None
        user, stale = found
        if stale:
            self.touch_token(token_hash, now)
        return user

    def check_token(self, token_hash: str, now: datetime) -> tuple[UserInfo, bool] | None:
        """Read only: the user a valid, unexpired token acts as, and whether its
        ``last_used_at`` is due to be written (:meth:`touch_token`)."""
        statement = select(ApiToken, User).join(User).where(ApiToken.token_hash == token_hash)
        with self._guard("check an API token"), self._session() as session:
            found = session.execute(statement).first()
            if found is None:
                return None
            token, user = found
            if token.expires_at is not None and token.expires_at <= now:
                return None
            return user_info(user), _stale(token.last_used_at, now)

    def touch_token(self, token_hash: str, now: datetime) -> None:
        """Note that a token was used at ``now``."""
        statement = (
            update(ApiToken).where(ApiToken.token_hash == token_hash).values(last_used_at=now)
        )
        with self._guard("note an API token's use"), self._session(write=True) as session:
            session.execute(statement)

    # -- browser sessions -----------------------------------------------------------------

    def create_web_session(
        self,
        token_hash: str,
        *,
        user_id: int,
        csrf_token: str,
        expires_at: datetime,
        client_address: str = "",
        user_agent: str = "",
    ) -> None:
        require_aware("expires_at", expires_at)
        now = utcnow()
        with self._guard("create a session"), self._session(write=True) as session:
            # Housekeeping on sign-in: expired sessions go.
            session.execute(delete(WebSession).where(WebSession.expires_at <= now))
            session.add(
                WebSession(
                    token_hash=token_hash,
                    user_id=user_id,
                    csrf_token=csrf_token,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=expires_at,
                    client_address=client_address,
                    user_agent=user_agent[:300],
                )
            )

    def web_session_user(
        self, token_hash: str, now: datetime, *, extend_to: datetime
    ) -> tuple[UserInfo, str] | None:
        """(user, CSRF token) of a live session, whose expiry slides to ``extend_to``."""
        found = self.check_web_session(token_hash, now)
        if found is None:
            return None
        user, csrf, stale = found
        if stale:
            self.touch_web_session(token_hash, now, extend_to=extend_to)
        return user, csrf

    def check_web_session(
        self, token_hash: str, now: datetime
    ) -> tuple[UserInfo, str, bool] | None:
        """Read only: (user, CSRF token, whether the session's expiry is due to slide with
        :meth:`touch_web_session`) of a live session."""
        statement = select(WebSession, User).join(User).where(WebSession.token_hash == token_hash)
        with self._guard("check a session"), self._session() as session:
            found = session.execute(statement).first()
            if found is None or found[0].expires_at <= now:
                return None
            web_session, user = found
            return user_info(user), web_session.csrf_token, _stale(web_session.last_seen_at, now)

    def touch_web_session(self, token_hash: str, now: datetime, *, extend_to: datetime) -> None:
        """Note that a session was seen at ``now``; it now expires at ``extend_to``."""
        statement = (
            update(WebSession)
            .where(WebSession.token_hash == token_hash)
            .values(last_seen_at=now, expires_at=extend_to)
        )
        with self._guard("extend a session"), self._session(write=True) as session:
            session.execute(statement)

    def delete_web_session(self, token_hash: str) -> None:
        with self._guard("end a session"), self._session(write=True) as session:
            session.execute(delete(WebSession).where(WebSession.token_hash == token_hash))

    # -- audit log ------------------------------------------------------------------------

    def audit(self, *entries: NewAuditEntry) -> None:
        """Append entries to the audit log, in one transaction. There is no way to change or
        remove them: not here, and database triggers refuse it to anyone else."""
        if not entries:
            return
        now = utcnow()
        rows = [
            {
                "at": now,
                "user_id": e.user_id,
                "username": e.username,
                "action": e.action,
                "recording_id": e.recording_id,
                "client_address": e.client_address,
                "detail": dict(e.detail),
            }
            for e in entries
        ]
        with self._guard("write the audit log"), self._session(write=True) as session:
            session.execute(insert(AuditEntry), rows)

    def audit_entries(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        username: str | None = None,
        action: str | None = None,
        recording_id: int | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditInfo]:
        """Newest first; ``before_id`` pages back (pass the last id of the previous page)."""
        if limit < 1:
            raise CatalogError(f"limit must be >= 1, got {limit}")
        where: list[ColumnElement[bool]] = []
        if since is not None:
            require_aware("since", since)
            where.append(AuditEntry.at >= since)
        if until is not None:
            require_aware("until", until)
            where.append(AuditEntry.at < until)
        if username:
            where.append(AuditEntry.username == username.strip().lower())
        if action:
            if action not in AUDIT_ACTIONS:
                raise CatalogError(f"unknown audit action {action!r}")
            where.append(AuditEntry.action == action)
        if recording_id is not None:
            where.append(AuditEntry.recording_id == recording_id)
        if before_id is not None:
            where.append(AuditEntry.id < before_id)
        statement = select(AuditEntry).where(*where).order_by(AuditEntry.id.desc()).limit(limit)
        with self._guard("read the audit log"), self._session() as session:
            return [audit_info(row) for row in session.scalars(statement)]

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
        order = (key.desc(), Recording.id.desc()) if descending else (key.asc(), Recording.id)
        page_where = list(where)
        if query.cursor is not None:
            value, last_id = _decode_cursor(query.cursor, query.sort)
            if descending:
                after = or_(key < value, and_(key == value, Recording.id < last_id))
            else:
                after = or_(key > value, and_(key == value, Recording.id > last_id))
            page_where.append(after)
        statement = select(Recording).where(*page_where).order_by(*order).limit(query.limit + 1)
        if query.page is not None:
            statement = statement.offset((query.page - 1) * query.limit)
        with self._guard("search recordings"), self._session() as session:
            rows = list(session.scalars(statement))
            more = len(rows) > query.limit
            rows = rows[: query.limit]
            items = [recording_info(row) for row in rows]
            total: int | None = None
            if query.with_total:
                capped = select(Recording.id).where(*where).limit(COUNT_CAP + 1).subquery()
                total = session.scalar(select(func.count()).select_from(capped)) or 0
        next_cursor = _encode_cursor(query.sort, rows[-1]) if more and rows else None
        exact = total is None or total <= COUNT_CAP
        return SearchPage(
            items=items,
            next_cursor=next_cursor,
            total=None if total is None else min(total, COUNT_CAP),
            total_exact=exact,
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

    def delete_recording(self, rec_id: int) -> RecordingInfo:
        """Remove a finished recording's row with its notes and tags; returns what it was.
        (The caller removes the file.) One still being recorded is refused."""
        with self._guard(f"delete recording {rec_id}"), self._session(write=True) as session:
            row = session.get(Recording, rec_id, with_for_update=True)
            if row is None:
                raise CatalogError(f"cannot delete recording {rec_id}: no such recording")
            if row.status == STATUS_RECORDING:
                raise CatalogError(f"cannot delete recording {rec_id}: it is still recording")
            info = recording_info(row)
            # Explicit, so it does not depend on the backend enforcing ON DELETE CASCADE.
            session.execute(delete(Note).where(Note.recording_id == rec_id))
            session.execute(delete(RecordingTag).where(RecordingTag.recording_id == rec_id))
            session.execute(delete(Recording).where(Recording.id == rec_id))
            return info

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


def _require_role(role: str) -> None:
    if role not in ROLES:
        raise CatalogError(f"role must be one of {', '.join(sorted(ROLES))}, got {role!r}")


def _admins(session: Session) -> int:
    statement = select(func.count()).select_from(User).where(User.role == ROLE_ADMIN)
    return session.scalar(statement) or 0


def _stale(last: datetime | None, now: datetime) -> bool:
    return last is None or (now - last).total_seconds() >= TOUCH_INTERVAL_SECONDS


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
    """Rows whose numbers, names or device contain ``word``, through the trigram index
    where one can help (see :mod:`callrec.catalog.search_index`)."""
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
    if query.since is not None:
        where.append(Recording.start_time >= query.since)
    if query.until is not None:
        where.append(Recording.start_time < query.until)
    if query.direction is not None:
        where.append(Recording.direction == query.direction)
    if query.device:
        where.append(func.lower(Recording.device) == query.device.strip().lower())
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


def _encode_cursor(sort: str, row: Recording) -> str:
    name = sort.lstrip("-")
    value: Any = getattr(row, name)
    if isinstance(value, datetime):
        value = value.isoformat()
    elif name == "duration" and value is None:
        value = -1.0
    raw = json.dumps({"s": sort, "v": value, "i": row.id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        value, last_id, cursor_sort = data["v"], int(data["i"]), data["s"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise CatalogError(f"invalid cursor {cursor[:40]!r}") from exc
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
    return value, last_id
