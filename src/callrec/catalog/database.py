"""Opening the catalogue's database: the URL, SQLite's connection set-up, and the Alembic
configuration of the migrations (:func:`head_revision`)."""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import ConnectionPoolEntry

from callrec import filemodes
from callrec.exceptions import CatalogError

#: Package resource holding env.py and versions/; no alembic.ini is needed anywhere.
MIGRATIONS = "callrec.catalog:migrations"

#: How long a SQLite writer waits for another writer's lock before "database is locked".
#: Writes are single-row or one batched checkpoint, so seconds mean something is wrong.
SQLITE_BUSY_TIMEOUT_MS = 10_000

#: Seconds to wait for a PostgreSQL server before giving up on opening the catalogue.
POSTGRES_CONNECT_TIMEOUT = 10

#: Execution option marking a connection that will write: on SQLite it takes the write lock
#: up front (BEGIN IMMEDIATE), so a read-then-write transaction never fails half-way with
#: SQLITE_BUSY after another writer committed (busy_timeout cannot help in that case).
WRITE_OPTION = "callrec_write"

#: PostgreSQL advisory lock held while migrating ("callrec" in ASCII).
MIGRATION_LOCK_KEY = int.from_bytes(b"callrec", "big")


def alembic_config() -> Config:
    """An Alembic configuration for the catalogue's migrations, built without any ini file."""
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.set_main_option("path_separator", "os")
    return config


def head_revision() -> str:
    """The newest migration revision shipped with this version of callrec."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise CatalogError("no catalogue migrations are installed")
    return head


def parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise CatalogError(f"invalid catalogue URL {url!r}: {exc}") from exc
    if parsed.drivername == "postgresql":
        # psycopg (3) is the driver we ship for; SQLAlchemy's default would be psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL; None for an in-memory or URI database."""
    database = url.database
    if (
        not database
        or database == ":memory:"
        or url.query.get("uri")
        or database.startswith("file:")
    ):
        return None
    return Path(database).absolute()


def make_parent_dir(url: URL, display: str) -> None:
    database = url.database
    if (
        not database
        or database == ":memory:"
        or url.query.get("uri")
        or database.startswith("file:")
    ):
        return
    path = Path(database)
    try:
        filemodes.make_dirs(path.parent)
        # Made here, not by SQLite, so that it has the configured mode whatever the umask;
        # SQLite gives its -wal, -shm and -journal files the mode of the database file.
        os.close(filemodes.create(path, os.O_WRONLY))
    except FileExistsError:
        pass
    except OSError as exc:
        raise CatalogError(f"cannot open catalogue {display}: {exc}") from exc


def configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        # Take transaction control from the sqlite3 module (which skips BEGIN before SELECT
        # and DDL), so reads are repeatable and migrations are transactional.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            # WAL: the web pages read while the server writes, neither blocks the other.
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def interrupt_connection(dbapi_connection: Any) -> None:
    """End what a DBAPI connection is doing, from another thread: SQLite's interrupt, or the
    socket of a server connection shut down (on a duplicate of its descriptor, so the driver
    still owns and closes its own)."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.interrupt()
        return
    fd = os.dup(dbapi_connection.fileno())
    with socket.socket(fileno=fd) as sock:
        sock.shutdown(socket.SHUT_RDWR)


def failure_reason(exc: BaseException) -> str:
    """The first line of what the database (or the driver) said, for a CatalogError."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
