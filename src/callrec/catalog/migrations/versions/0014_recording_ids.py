"""Recording ids are never reused on SQLite.

Without ``AUTOINCREMENT`` SQLite gives a new row the largest id plus one, so deleting the
newest recording let the next one take its id: a tombstone, audit entries and hash chain
entries would then name two recordings. The table is rebuilt with ``AUTOINCREMENT`` and its
counter starts past every id the catalogue has ever named (the table, tombstones, the audit
log, the hash chain). PostgreSQL's sequence never goes back; nothing changes there.

The rebuild drops the old table, so it runs with foreign keys off (``Catalog.migrate``
turns them off on SQLite) or the children's ``ON DELETE CASCADE`` would empty them. The
free-text index's triggers go with the old table and are made again.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

from callrec.catalog import search_index

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Every column that holds a recording's id, whether or not the recording still exists.
_NAMED_IDS = (
    ("recordings", "id"),
    ("tombstones", "recording_id"),
    ("audit_log", "recording_id"),
    ("integrity_chain", "recording_id"),
)


def _rebuild(autoincrement: bool) -> None:
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        return
    search_index.drop(connection)
    with op.batch_alter_table(
        "recordings", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass
    search_index.create(connection)
    if autoincrement:
        highest = " UNION ALL ".join(f"SELECT max({c}) AS m FROM {t}" for t, c in _NAMED_IDS)
        connection.execute(text("DELETE FROM sqlite_sequence WHERE name = 'recordings'"))
        connection.execute(
            text(
                "INSERT INTO sqlite_sequence (name, seq)"
                f" SELECT 'recordings', coalesce(max(m), 0) FROM ({highest})"
            )
        )


def upgrade() -> None:
    _rebuild(autoincrement=True)


def downgrade() -> None:
    _rebuild(autoincrement=False)
