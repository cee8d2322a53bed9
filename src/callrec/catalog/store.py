"""The catalogue: the one object the rest of callrec uses to read and write recording rows.

This module opens and closes the database, migrates its schema and writes recording rows (one
or a batch per transaction); the reads and the web's queries are mixed in from their modules.
Calls block on the database; the server runs them off the event loop. A :class:`Catalog` may be
shared between threads: every call takes its own connection from the engine's pool and commits
(or rolls back) before it returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import SimpleNamespace, TracebackType
from typing import Any

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.util.exc import CommandError
from sqlalchemy import (
    Connection,
    bindparam,
    create_engine,
    delete,
    event,
    select,
    text,
    update,
)
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session

from callrec.catalog import integrity, replay
from callrec.catalog.batch import (
    FINISH_READ_COLUMNS,
    IN_CHUNK,
    POSTGRES_IDS,
    RECORDINGS,
    SQLITE_IDS,
    DuplicatePathError,
    FinishRecording,
    check_finish,
    chunks,
    counter_values,
    insert_new,
    new_row_values,
    new_stop_fields,
)
from callrec.catalog.browsing import BrowsingQueries
from callrec.catalog.database import (
    MIGRATION_LOCK_KEY,
    POSTGRES_CONNECT_TIMEOUT,
    WRITE_OPTION,
    alembic_config,
    configure_sqlite,
    failure_reason,
    interrupt_connection,
    make_parent_dir,
    parse_url,
    sqlite_file,
)
from callrec.catalog.holds import HoldQueries  # issue 16 R: legal holds
from callrec.catalog.models import Recording
from callrec.catalog.reads import RecordingReads
from callrec.catalog.records import (
    COUNTER_COLUMNS,
    STATUS_RECORDING,
    NewRecording,
    require_counters,
    utcnow,
)
from callrec.catalog.replay import JournalEntry
from callrec.catalog.retirement import RetirementQueries  # issue 16 R: retention
from callrec.catalog.webaccounts import AccountQueries
from callrec.exceptions import CatalogError
from callrec.rtp.counters import StreamCounters

_log = logging.getLogger(__name__)


class Catalog(RecordingReads, AccountQueries, BrowsingQueries, HoldQueries, RetirementQueries):
    """Recording rows in a SQLite file (the default) or a PostgreSQL database.

    ``url`` is a SQLAlchemy URL: ``sqlite:///path/to/callrec.db`` (the parent directory is
    created; WAL mode, foreign keys on, a busy timeout) or ``postgresql+psycopg://user@host/db``
    (plain ``postgresql://`` also selects psycopg). The database is opened at once, so a bad
    URL or an unreachable server raises :class:`CatalogError` here; call :meth:`migrate` to
    create or upgrade the schema.
    """

    def __init__(self, url: str, *, check: bool = True) -> None:
        parsed = parse_url(url)
        self._display = parsed.render_as_string(hide_password=True)
        self._closed = False
        is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        #: The SQLite file and its identity once opened (:meth:`check_file`).
        self._file = sqlite_file(parsed) if is_sqlite else None
        self._file_id: tuple[int, int] | None = None
        if is_sqlite:
            make_parent_dir(parsed, self._display)
        else:
            kwargs["pool_pre_ping"] = True
            if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
                kwargs["connect_args"] = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT}
        try:
            engine = create_engine(parsed, **kwargs)
        except (ArgumentError, NoSuchModuleError, ImportError, TypeError) as exc:
            raise CatalogError(f"cannot open catalogue {self._display}: {exc}") from exc
        if is_sqlite:
            configure_sqlite(engine)
        #: Every open DBAPI connection, by id (see interrupt()).
        self._connections: dict[int, Any] = {}
        self._connections_lock = threading.Lock()
        self._migrating = False
        event.listen(engine, "connect", self._opened)
        event.listen(engine, "close", self._closed_connection)
        event.listen(engine, "close_detached", self._closed_detached)
        self._engine = engine
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        if not check:
            # The server records without its catalogue: it connects when it can.
            return
        try:
            with engine.connect():
                pass
        except (SQLAlchemyError, sqlite3.Error) as exc:
            engine.dispose()
            raise CatalogError(
                f"cannot open catalogue {self._display}: {failure_reason(exc)}"
            ) from exc
        _log.debug("catalogue %s opened", self._display)

    def __repr__(self) -> str:
        return f"<Catalog {self._display}{' closed' if self._closed else ''}>"

    def __enter__(self) -> Catalog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The database URL with any password hidden, for logs and ``callrec db``."""
        return self._display

    # -- a watchdog for hung databases ------------------------------------------------------

    def _opened(self, dbapi_connection: Any, record: Any) -> None:
        with self._connections_lock:
            self._connections[id(dbapi_connection)] = dbapi_connection

    def _closed_connection(self, dbapi_connection: Any, record: Any) -> None:
        self._closed_detached(dbapi_connection)

    def _closed_detached(self, dbapi_connection: Any) -> None:
        with self._connections_lock:
            self._connections.pop(id(dbapi_connection), None)

    def interrupt(self) -> int:
        """Break off whatever the database connections are doing (any thread): a call
        stuck on a hung database raises :class:`CatalogError`, a connection waiting in the
        pool is dropped at its next use. How many connections.

        A hung PostgreSQL server (stopped, not dead) never answers and its kernel keeps the
        TCP connections alive, so no timeout of libpq or of the server ends the wait (not
        even the pool's pre-ping); shutting the sockets down does. SQLite's own interrupt
        ends a long statement. A migration is never broken off: it may take long on a big
        catalogue, and it runs alone."""
        if self._migrating:
            return 0
        with self._connections_lock:
            connections = list(self._connections.values())
        for conn in connections:
            with contextlib.suppress(Exception):  # closed meanwhile
                interrupt_connection(conn)
        return len(connections)

    def check_file(self) -> None:
        """Raise :class:`CatalogError` when the SQLite file is gone or replaced since it was
        first checked: SQLite would go on writing to the removed file, and every row written
        would vanish with it. Nothing to check on a server database."""
        if self._file is None:
            return
        try:
            st = os.stat(self._file)
        except OSError as exc:
            raise CatalogError(
                f"catalogue file {self._file} is gone ({exc.strerror}); restart callrec to "
                "open a new one and rebuild it from the recordings (callrec catalogue rebuild)"
            ) from exc
        found = (st.st_dev, st.st_ino)
        if self._file_id is None:
            self._file_id = found
        elif found != self._file_id:
            raise CatalogError(
                f"catalogue file {self._file} was replaced while callrec had it open; restart "
                "callrec to open the new one"
            )

    # -- schema ---------------------------------------------------------------------------

    def migrate(self, *, node: str | None = None) -> None:
        """Create or upgrade the schema to the newest revision (a no-op when it is current).

        The whole upgrade is one transaction on both backends, so a failed migration leaves
        the previous schema in place. ``node``: the node migrating (``node_name``); the
        recordings from before nodes become its own (migration 0011: the installation being
        upgraded is the one that recorded them).
        """
        self._migrating = True
        try:
            self._migrate(node)
        finally:
            self._migrating = False

    def _migrate(self, node: str | None) -> None:
        with self._guard("migrate"), self._write_engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # A migration that rebuilds a table drops the old one, and with foreign keys
                # on that cascades into its children. The pragma is ignored inside a
                # transaction, so it goes to the driver before BEGIN; checked before COMMIT.
                _sqlite_pragma(connection, "foreign_keys = OFF")
            try:
                with connection.begin():
                    before, after = self._upgrade(connection, node)
            finally:
                if sqlite:
                    _sqlite_pragma(connection, "foreign_keys = ON")
        if before != after:
            _log.info("catalogue %s migrated from %s to %s", self._display, before, after)

    @staticmethod
    def _upgrade(connection: Connection, node: str | None) -> tuple[str | None, str | None]:
        if connection.dialect.name == "postgresql":
            # Two servers starting at once: the second waits, then finds nothing to do.
            # (On SQLite, BEGIN IMMEDIATE already serialises them.)
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        before = MigrationContext.configure(connection).get_current_revision()
        config = alembic_config()
        config.attributes["connection"] = connection
        config.attributes["node"] = node
        command.upgrade(config, "head")
        after = MigrationContext.configure(connection).get_current_revision()
        if connection.dialect.name == "sqlite":
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise CatalogError(
                    f"migration to {after} left {len(broken)} rows whose parent is missing"
                    f" (first: {tuple(broken[0])}); nothing was changed"
                )
        return before, after

    def revision(self) -> str | None:
        """The schema revision the database is at; None before the first :meth:`migrate`."""
        with self._guard("read the schema revision"), self._engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    # -- writes ---------------------------------------------------------------------------

    def create_recording(self, rec: NewRecording) -> int:
        """Add a row in status ``recording``; returns its id."""
        row = Recording(**new_row_values(rec))
        with self._guard("create a recording"):
            try:
                with self._session(write=True) as session:
                    session.add(row)
                    session.flush()
                    rec_id = row.id
            except IntegrityError as exc:
                # The only constraint a validated NewRecording can break.
                raise DuplicatePathError(
                    f"cannot create recording: path {rec.path!r} is already catalogued"
                ) from exc
        _log.debug("session %s: recording %d catalogued as %s", rec.session_id, rec_id, rec.path)
        return rec_id

    def create_recordings(self, news: Sequence[NewRecording]) -> list[int | DuplicatePathError]:
        """Add many rows in status ``recording`` in one transaction (group commit).

        Returns, in the order of ``news``, each new row's id, or a :class:`DuplicatePathError`
        for a recording whose path is already catalogued or repeats an earlier one of the
        batch; those rows are skipped, the others are written. The rows are the ones
        :meth:`create_recording` would write. Any other failure raises :class:`CatalogError`
        and writes nothing.
        """
        if not news:
            return []
        with self._guard("create recordings"):
            try:
                with self._write_engine.begin() as connection:
                    results = insert_new(connection, news)
            except IntegrityError:
                # Another writer catalogued one of these paths since the batch looked
                # (PostgreSQL; SQLite's write lock rules that out). Nothing was written.
                _log.debug("%d new recordings met a concurrent duplicate path", len(news))
                return self._create_singly(news)
        for rec, result in zip(news, results, strict=True):
            if isinstance(result, int):
                _log.debug(
                    "session %s: recording %d catalogued as %s", rec.session_id, result, rec.path
                )
        return results

    def _create_singly(self, news: Sequence[NewRecording]) -> list[int | DuplicatePathError]:
        results: list[int | DuplicatePathError] = []
        for rec in news:
            try:
                results.append(self.create_recording(rec))
            except DuplicatePathError as exc:
                results.append(exc)
        return results

    def abandon_recording(self, rec_id: int) -> bool:
        """Remove a row that is still ``recording`` because its file was never made: the
        name it claimed was taken on disk meanwhile, by a program other than callrec. False
        when there was no such row (a finished row is never removed here)."""
        statement = (
            delete(RECORDINGS)
            .where(RECORDINGS.c.id == rec_id)
            .where(RECORDINGS.c.status == STATUS_RECORDING)
        )
        with self._guard(f"abandon recording {rec_id}"), self._write_engine.begin() as connection:
            return bool(connection.execute(statement).rowcount)

    def checkpoint(self, counters: Mapping[int, StreamCounters]) -> None:
        """Store the current counters of many recordings in one transaction.

        Rows that are no longer ``recording`` are left alone (their final counters were set
        by :meth:`finish_recording`); ids that do not exist are ignored.
        """
        if not counters:
            return
        for values in counters.values():
            require_counters(values)
        with self._guard("checkpoint counters"), self._write_engine.begin() as connection:
            _checkpoint_rows(connection, counters)

    def finish_recording(
        self,
        rec_id: int,
        *,
        status: str,
        stop_reason: str,
        end_time: datetime,
        duration: float,
        size_bytes: int,
        sha256: str | None,
        counters: StreamCounters | None,
        phone_stop_reason: str | None = None,
        stop_fields: Mapping[str, str] | None = None,
    ) -> None:
        """Close a ``recording`` row with its final state.

        ``counters`` None keeps the last checkpoint (recovery after a crash). ``stop_fields``
        are the fields of the phone's stop request: they are merged into ``extra["stop"]``,
        except ``cmd`` and fields that merely repeat a stored value (``id``, numbers, names,
        ``reason`` ...); a number or name that changed during the call is kept there.
        """
        error = self.finish_recordings(
            [
                FinishRecording(
                    rec_id=rec_id,
                    status=status,
                    stop_reason=stop_reason,
                    end_time=end_time,
                    duration=duration,
                    size_bytes=size_bytes,
                    sha256=sha256,
                    counters=counters,
                    phone_stop_reason=phone_stop_reason,
                    stop_fields=stop_fields,
                )
            ]
        )[0]
        if error is not None:
            raise error

    def finish_recordings(self, items: Sequence[FinishRecording]) -> list[CatalogError | None]:
        """Close many ``recording`` rows in one transaction (group commit).

        Each item does what :meth:`finish_recording` with its arguments does. Returns, in the
        order of ``items``, None for an item done or the :class:`CatalogError` that
        :meth:`finish_recording` would have raised for it (a bad value, no such recording,
        already final); such an item changes nothing, the others are still done. An id given
        twice is finished by its first item only. A database failure raises
        :class:`CatalogError` and writes nothing.
        """
        checked = [check_finish(item) for item in items]
        if all(error is not None for error in checked):
            return checked  # nothing to write: no transaction
        action = f"finish recording {items[0].rec_id}" if len(items) == 1 else "finish recordings"
        with self._guard(action), self._write_engine.begin() as connection:
            return self._finish_rows(connection, items)

    def _finish_rows(
        self,
        connection: Connection,
        items: Sequence[FinishRecording],
        *,
        replace_guess: bool = False,
    ) -> list[CatalogError | None]:
        """:meth:`finish_recordings` inside the transaction of ``connection``. With
        ``replace_guess`` a row that start-up recovery finished (``crash``) is finished
        again: the journal's finish is what happened, recovery's only a guess."""
        results: list[CatalogError | None] = [check_finish(item) for item in items]
        todo = [index for index, error in enumerate(results) if error is None]
        if not todo:
            return results
        possible = SQLITE_IDS if self._engine.dialect.name == "sqlite" else POSTGRES_IDS
        ids = sorted({items[index].rec_id for index in todo if items[index].rec_id in possible})
        columns = [RECORDINGS.c[name] for name in FINISH_READ_COLUMNS]
        now = utcnow()
        done: list[tuple[int, str]] = []
        rows: dict[int, dict[str, Any]] = {}
        for chunk in chunks(ids, IN_CHUNK):
            # Sorted and locked, so two writers on PostgreSQL lock rows in the same order.
            statement = (
                select(*columns)
                .where(RECORDINGS.c.id.in_(chunk))
                .order_by(RECORDINGS.c.id)
                .with_for_update()
            )
            rows.update((row.id, dict(row._mapping)) for row in connection.execute(statement))
        # Rows that set the same columns share one executemany UPDATE.
        updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for index in todo:
            item = items[index]
            row = rows.get(item.rec_id)
            if row is None:
                results[index] = CatalogError(
                    f"cannot finish recording {item.rec_id}: no such recording"
                )
                continue
            guessed = replace_guess and row["stop_reason"] == CRASH
            if row["status"] != STATUS_RECORDING and not guessed:
                results[index] = AlreadyFinishedError(
                    f"cannot finish recording {item.rec_id}: it is already {row['status']}"
                )
                continue
            values: dict[str, Any] = {
                "status": item.status,
                "stop_reason": item.stop_reason,
                "phone_stop_reason": item.phone_stop_reason,
                "end_time": item.end_time,
                "duration": item.duration,
                "size_bytes": item.size_bytes,
                "sha256": item.sha256,
                "updated_at": now,
            }
            if item.counters is not None:
                values.update(counter_values(item.counters))
            # The row as finish_recording compares it: phone_stop_reason already set.
            row.update(status=item.status, phone_stop_reason=item.phone_stop_reason)
            kept = new_stop_fields(SimpleNamespace(**row), item.stop_fields or {})
            if kept:
                extra = dict(row["extra"])
                previous = extra.get("stop")
                extra["stop"] = {**(previous if isinstance(previous, dict) else {}), **kept}
                values["extra"] = row["extra"] = extra
            updates.setdefault(tuple(values), []).append(
                {"b_id": item.rec_id, **{f"b_{k}": v for k, v in values.items()}}
            )
            done.append((index, row["session_id"]))
        for names, params in updates.items():
            finish = (
                update(RECORDINGS)
                .where(RECORDINGS.c.id == bindparam("b_id"))
                .values({name: bindparam(f"b_{name}") for name in names})
            )
            connection.execute(finish, params)
        # Chained in the finish's own transaction: a finished recording is never out of it.
        integrity.chain_finished(connection, [items[index].rec_id for index, _ in done])
        for index, session_id in done:
            item = items[index]
            _log.debug(
                "session %s: recording %d %s (%s)",
                session_id,
                item.rec_id,
                item.status,
                item.stop_reason,
            )
        return results

    def apply_journal(self, entries: Sequence[JournalEntry]) -> dict[str, int]:
        """Apply a batch of the engine's journal in one transaction (:mod:`.replay`).

        Idempotent: entries already applied change nothing. Returns uid -> row id of every
        recording the batch names that has a row. A finish with a bad value is logged and
        left (it can never apply); a database failure raises :class:`CatalogError` and
        writes nothing."""
        if not entries:
            return {}
        with self._guard("apply the journal"), self._write_engine.begin() as connection:
            known = replay.row_ids(connection, replay.entry_uids(entries))
            starts = [e.rec for e in entries if isinstance(e, replay.JournalStart)]
            replay.insert_starts(connection, starts, known)
            latest = replay.merged_checkpoints(entries, known)
            if latest:
                _checkpoint_rows(connection, latest)
            items = replay.finishes(entries, known)
            results = self._finish_rows(connection, items, replace_guess=True)
            for item, error in zip(items, results, strict=True):
                if error is not None and not isinstance(error, AlreadyFinishedError):
                    _log.error("journal: recording %d not finished: %s", item.rec_id, error)
        return known

    def reset_connections(self) -> None:
        """Drop the pooled connections: the next call opens new ones (after a failure)."""
        if not self._closed:
            self._engine.dispose()

    def close(self) -> None:
        """Close every pooled connection. Further calls raise :class:`CatalogError`."""
        if not self._closed:
            self._closed = True
            self._engine.dispose()
            _log.debug("catalogue %s closed", self._display)

    # -- transactions for the package's other query modules ----------------------------------

    @contextmanager
    def transaction(
        self, action: str, *, write: bool = False, conflict: str | None = None
    ) -> Iterator[Session]:
        """One transaction for queries that live in other modules of this package (the SIP
        accounts): committed when the block ends, rolled back when it raises. ``write`` takes
        the write lock up front (SQLite). A database failure becomes a :class:`CatalogError`
        saying ``cannot <action>``; a broken unique constraint becomes ``CatalogError(conflict)``
        when ``conflict`` is given."""
        with self._guard(action):
            try:
                with self._session(write=write) as session:
                    yield session
            except IntegrityError as exc:
                if conflict is None:
                    raise
                raise CatalogError(conflict) from exc

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _session(self, *, write: bool = False) -> Iterator[Session]:
        engine = self._write_engine if write else self._engine
        with Session(engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        if self._closed:
            raise CatalogError(f"cannot {action}: catalogue {self._display} is closed")
        if self._file is not None and (self._file_id is not None or os.path.exists(self._file)):
            # Once the file exists, every transaction looks at it again: a new connection
            # to a SQLite file that was moved away would create an empty one in its place
            # (the catalogue would then look merely broken, not gone). One os.stat.
            try:
                self.check_file()
            except CatalogError as exc:
                raise CatalogError(f"cannot {action}: {exc}") from exc
        try:
            yield
        # OverflowError: an integer past 64 bits reached a query (the front ends bound
        # theirs; this keeps any other caller's from becoming a traceback).
        except (SQLAlchemyError, sqlite3.Error, CommandError, OverflowError) as exc:
            raise CatalogError(
                f"cannot {action} in {self._display}: {failure_reason(exc)}"
            ) from exc


#: The stop reason start-up recovery gives (:mod:`callrec.engine.recovery`).
CRASH = "crash"


def _sqlite_pragma(connection: Connection, pragma: str) -> None:
    """Run ``PRAGMA pragma`` on the driver's connection, outside any transaction."""
    driver = connection.connection.driver_connection
    assert driver is not None
    driver.execute(f"PRAGMA {pragma}")


class AlreadyFinishedError(CatalogError):
    """The row to finish is already final (a finish applied twice)."""


def _checkpoint_rows(connection: Connection, counters: Mapping[int, StreamCounters]) -> None:
    now = utcnow()
    # Sorted, so two writers on PostgreSQL lock rows in the same order.
    params = [
        {
            "b_id": rec_id,
            "b_now": now,
            **{f"b_{k}": v for k, v in counter_values(counters[rec_id]).items()},
        }
        for rec_id in sorted(counters)
    ]
    statement = (
        update(RECORDINGS)
        .where(RECORDINGS.c.id == bindparam("b_id"))
        .where(RECORDINGS.c.status == STATUS_RECORDING)
        .values(
            updated_at=bindparam("b_now"),
            **{column: bindparam(f"b_{column}") for column in COUNTER_COLUMNS.values()},
        )
    )
    connection.execute(statement, params)
