"""The catalogue's queries for the web's accounts, mixed into :class:`callrec.catalog.Catalog`:
users, API tokens, browser sessions and the audit log.

Callers check roles (admin or not); the catalogue checks data: a user name is unique whatever
its case, and the last admin stays an admin.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from callrec.catalog.mappers import audit_info, token_info, user_info
from callrec.catalog.records import require_aware, utcnow
from callrec.catalog.webmodels import ApiToken, AuditEntry, User, WebSession
from callrec.catalog.webrecords import (
    AUDIT_ACTIONS,
    ROLE_ADMIN,
    ROLES,
    AuditInfo,
    NewAuditEntry,
    PasswordChange,
    TokenInfo,
    UserInfo,
    check_devices,
    check_extensions,
    normalise_username,
)
from callrec.exceptions import CatalogError

#: last_used_at / last_seen_at are written at most this often per token or session, so that a
#: script polling the API does not turn every read into a write.
TOUCH_INTERVAL_SECONDS = 60


class AccountQueries:
    """Users, API tokens, browser sessions and the audit log."""

    if TYPE_CHECKING:

        def _session(self, *, write: bool = False) -> AbstractContextManager[Session]: ...

        def _guard(self, action: str) -> AbstractContextManager[None]: ...

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
        row = User(
            username=name,
            password_hash=password_hash,
            role=role,
            extensions=list(check_extensions(extensions)),
            devices=list(check_devices(devices)),
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
        must_change_password: bool | None = None,
    ) -> UserInfo:
        """Change what is given (a password: :meth:`set_password`); the last admin stays
        admin."""
        if role is not None:
            _require_role(role)
        new_extensions = None if extensions is None else check_extensions(extensions)
        new_devices = None if devices is None else check_devices(devices)
        with self._guard(f"update user {user_id}"), self._session(write=True) as session:
            row = session.get(User, user_id, with_for_update=True)
            if row is None:
                raise CatalogError(f"cannot update user {user_id}: no such user")
            if role is not None and role != row.role:
                if row.role == ROLE_ADMIN and _admins(session) <= 1:
                    raise CatalogError(f"cannot make {row.username} a {role}: the last admin")
                row.role = role
            if new_extensions is not None:
                row.extensions = list(new_extensions)
            if new_devices is not None:
                row.devices = list(new_devices)
            if must_change_password is not None:
                row.must_change_password = must_change_password
            session.flush()
            return user_info(row)

    def set_password(
        self,
        user_id: int,
        *,
        password_hash: str,
        must_change_password: bool,
        keep_session: str | None = None,
    ) -> PasswordChange:
        """A new password (a one-time one with ``must_change_password``). Whatever the old
        one let in goes with it, in the same transaction: every API token of the user, and
        every browser session but ``keep_session`` (the hash of the one that changed it)."""
        with (
            self._guard(f"set the password of user {user_id}"),
            self._session(write=True) as session,
        ):
            row = session.get(User, user_id, with_for_update=True)
            if row is None:
                raise CatalogError(f"cannot set a password: no user {user_id}")
            row.password_hash = password_hash
            row.must_change_password = must_change_password
            tokens = list(session.scalars(select(ApiToken.id).where(ApiToken.user_id == user_id)))
            session.execute(delete(ApiToken).where(ApiToken.user_id == user_id))
            gone = delete(WebSession).where(WebSession.user_id == user_id)
            if keep_session is not None:
                gone = gone.where(WebSession.token_hash != keep_session)
            ended = session.execute(gone).rowcount  # type: ignore[attr-defined]
            session.flush()
            return PasswordChange(
                user=user_info(row), tokens_revoked=tuple(sorted(tokens)), sessions_ended=ended
            )

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
        user, stale, _expires = found
        if stale:
            self.touch_token(token_hash, now)
        return user

    def check_token(
        self, token_hash: str, now: datetime
    ) -> tuple[UserInfo, bool, datetime | None] | None:
        """Read only: the user a valid, unexpired token acts as, whether its ``last_used_at``
        is due to be written (:meth:`touch_token`), and when the token expires."""
        statement = select(ApiToken, User).join(User).where(ApiToken.token_hash == token_hash)
        with self._guard("check an API token"), self._session() as session:
            found = session.execute(statement).first()
            if found is None:
                return None
            token, user = found
            if token.expires_at is not None and token.expires_at <= now:
                return None
            return user_info(user), _stale(token.last_used_at, now), token.expires_at

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


def _require_role(role: str) -> None:
    if role not in ROLES:
        raise CatalogError(f"role must be one of {', '.join(sorted(ROLES))}, got {role!r}")


def _admins(session: Session) -> int:
    statement = select(func.count()).select_from(User).where(User.role == ROLE_ADMIN)
    return session.scalar(statement) or 0


def _stale(last: datetime | None, now: datetime) -> bool:
    return last is None or (now - last).total_seconds() >= TOUCH_INTERVAL_SECONDS
