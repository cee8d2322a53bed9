"""A recording's id is never given to another recording (migration 0014)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import text

from callrec.catalog import Catalog
from callrec.catalog.database import alembic_config
from callrec.catalog.webrecords import SearchQuery
from tests.support.catalog import finish_values, new_recording


def _finished(catalog: Catalog, n: int) -> int:
    rec_id = catalog.create_recording(new_recording(n))
    catalog.finish_recording(rec_id, **finish_values())
    return rec_id


def test_the_newest_recordings_id_is_not_given_again(catalog: Catalog) -> None:
    first, newest = _finished(catalog, 0), _finished(catalog, 1)
    catalog.delete_recording(newest, by="test", reason="unwanted")
    assert catalog.create_recording(new_recording(2)) == newest + 1
    assert first == newest - 1


def test_upgrade_keeps_rows_and_children_and_skips_every_named_id(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'callrec.db'}"
    with Catalog(url) as catalog:
        with catalog._write_engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0013")
        kept = [_finished(catalog, n) for n in range(3)]
        assert kept == [1, 2, 3]
        assert catalog.add_tag(2, "complaint")
        catalog.delete_recording(3, by="test", reason="unwanted")
        # An id only the audit log still names (a row from before tombstones).
        with catalog._write_engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO audit_log (at, username, action, recording_id, client_address,"
                    " detail) VALUES ('2026-03-01 12:00:00', 'admin', 'delete', 9, '', '{}')"
                )
            )

        catalog.migrate()

        with catalog._engine.connect() as connection:
            sql = connection.execute(
                text("SELECT sql FROM sqlite_master WHERE name = 'recordings'")
            ).scalar_one()
        assert "AUTOINCREMENT" in sql
        # Foreign keys are on again, and the rebuild cascaded nothing into the children.
        with catalog._engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
        assert catalog.tags_of([2]) == {2: ["complaint"]}
        assert [r.id for r in catalog.find(limit=10)] == [2, 1]
        # The free-text index still finds the old rows, and new ones.
        assert [r.id for r in catalog.search(SearchQuery(q="0301234001")).items] == [2]
        new = catalog.create_recording(new_recording(7))
        assert new == 10
        assert [r.id for r in catalog.search(SearchQuery(q="0301234007")).items] == [10]
