"""The free-text index behind recording searches: trigrams, so any part of a number or name
is found without reading every row.

* SQLite: an FTS5 table with the ``trigram`` tokenizer (SQLite 3.34+), kept in step with
  ``recordings`` by triggers; a phrase query finds a substring, case folded (also outside
  ASCII, which SQLite's ``lower()`` is not).
* PostgreSQL: a GIN ``pg_trgm`` index on the same text, used by ``LIKE '%...%'``. If the
  extension cannot be created (no privilege), searches still work, by reading the table.

Words shorter than :data:`MIN_INDEXED` characters cannot use a trigram index; they are
matched with ``LIKE`` on the columns. These objects live outside the ORM models, so schema
comparisons skip them (:func:`include_name`).
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Connection, text

#: Trigram indexes need words of at least three characters.
MIN_INDEXED: Final = 3
FTS_TABLE: Final = "recordings_fts"
PG_INDEX: Final = "ix_recordings_search_trgm"
#: The searched text of a row, as SQL over the recordings table (both backends).
SEARCH_TEXT_SQL: Final = (
    "(local_number || ' ' || remote_number || ' ' || local_name || ' ' || remote_name"
    " || ' ' || device)"
)


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic ``include_name`` hook: leave the search index objects out of comparisons."""
    # The transcripts' index (callrec.catalog.transcripts) is of the same sort.
    return not (name or "").startswith(
        (FTS_TABLE, PG_INDEX, "transcripts_fts", "ix_transcripts_search")
    )


def create(connection: Connection) -> None:
    """Create the index for the connection's backend and fill it from existing rows."""
    if connection.dialect.name == "postgresql":
        _create_postgresql(connection)
    elif connection.dialect.name == "sqlite":
        _create_sqlite(connection)


def drop(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"DROP INDEX IF EXISTS {PG_INDEX}"))
    elif connection.dialect.name == "sqlite":
        for trigger in ("insert", "update", "delete"):
            connection.execute(text(f"DROP TRIGGER IF EXISTS {FTS_TABLE}_{trigger}"))
        connection.execute(text(f"DROP TABLE IF EXISTS {FTS_TABLE}"))


def _row_text(alias: str) -> str:
    """:data:`SEARCH_TEXT_SQL` over ``alias`` (``new``/``old`` in a trigger)."""
    parts = ("local_number", "remote_number", "local_name", "remote_name", "device")
    return "(" + " || ' ' || ".join(f"{alias}.{p}" for p in parts) + ")"


def _create_sqlite(connection: Connection) -> None:
    connection.execute(
        text(f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(body, tokenize='trigram')")
    )
    connection.execute(
        text(f"INSERT INTO {FTS_TABLE}(rowid, body) SELECT id, {SEARCH_TEXT_SQL} FROM recordings")
    )
    new, old = _row_text("new"), _row_text("old")
    connection.execute(
        text(
            f"CREATE TRIGGER {FTS_TABLE}_insert AFTER INSERT ON recordings BEGIN"
            f" INSERT INTO {FTS_TABLE}(rowid, body) VALUES (new.id, {new}); END"
        )
    )
    connection.execute(
        text(
            f"CREATE TRIGGER {FTS_TABLE}_update AFTER UPDATE OF local_number, remote_number,"
            f" local_name, remote_name, device ON recordings"
            f" WHEN {old} IS NOT {new} BEGIN"
            f" UPDATE {FTS_TABLE} SET body = {new} WHERE rowid = new.id; END"
        )
    )
    connection.execute(
        text(
            f"CREATE TRIGGER {FTS_TABLE}_delete AFTER DELETE ON recordings BEGIN"
            f" DELETE FROM {FTS_TABLE} WHERE rowid = old.id; END"
        )
    )


def _create_postgresql(connection: Connection) -> None:
    # In a savepoint: without the privilege to create the extension, the migration goes on
    # and searches read the table instead.
    savepoint = connection.begin_nested()
    try:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        connection.execute(
            text(
                f"CREATE INDEX {PG_INDEX} ON recordings"
                f" USING gin (lower{SEARCH_TEXT_SQL} gin_trgm_ops)"
            )
        )
    except Exception:
        savepoint.rollback()
        return
    savepoint.commit()
