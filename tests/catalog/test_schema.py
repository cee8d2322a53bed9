"""Opening a catalogue, migrations, and the schema they build (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import fnmatch
import sqlite3
import threading
import tomllib
from contextlib import closing
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, inspect, text

import callrec
from callrec.catalog import Catalog, NewRecording, RecordingInfo, head_revision
from callrec.catalog.database import SQLITE_BUSY_TIMEOUT_MS, alembic_config
from callrec.catalog.models import Base, Recording
from callrec.catalog.search_index import include_name
from callrec.exceptions import CatalogError
from tests.support.catalog import new_recording

PACKAGE_DIR = Path(callrec.__file__).parent
PYPROJECT = PACKAGE_DIR.parents[1] / "pyproject.toml"


def test_migrate_twice_is_idempotent(
    catalog_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No alembic.ini anywhere near the working directory.
    monkeypatch.chdir(tmp_path)
    with Catalog(catalog_url) as catalog:
        assert catalog.revision() is None
        catalog.migrate()
        assert catalog.revision() == head_revision()
        rec_id = catalog.create_recording(new_recording())
        catalog.migrate()
        assert catalog.revision() == head_revision()
        assert catalog.get(rec_id) is not None
    # A second process opening the same database finds it current.
    with Catalog(catalog_url) as again:
        again.migrate()
        assert again.count() == 1


def test_migration_matches_models(catalog: Catalog) -> None:
    # The comparison does see a difference when there is one.
    drifted = MetaData(naming_convention=Base.metadata.naming_convention)
    for other in Base.metadata.sorted_tables:
        other.to_metadata(drifted)
    drifted.tables["recordings"].append_column(Column("rating", Integer))
    with catalog._engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_name": include_name}
        )
        assert compare_metadata(context, Base.metadata) == []
        assert [diff[0] for diff in compare_metadata(context, drifted)] == ["add_column"]
        names = {index["name"] for index in inspect(connection).get_indexes("recordings")}
    assert {
        "ix_recordings_start_time",
        "ix_recordings_local_number",
        "ix_recordings_remote_number",
        "ix_recordings_device_start_time",
        "ix_recordings_session_id",
        "ix_recordings_status",
    } <= names


def test_downgrade_then_upgrade(catalog: Catalog) -> None:
    with catalog._write_engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
        assert not inspect(connection).has_table("recordings")
    catalog.migrate()
    assert catalog.create_recording(new_recording()) == 1


def test_sqlite_is_wal_with_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    db = tmp_path / "a" / "b" / "callrec.db"
    with Catalog(f"sqlite:///{db}") as catalog:
        catalog.migrate()
        with catalog._engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            busy = connection.execute(text("PRAGMA busy_timeout")).scalar()
            assert busy == SQLITE_BUSY_TIMEOUT_MS
    # WAL is a property of the file, seen by any other client.
    with closing(sqlite3.connect(db)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_two_sqlite_catalogs_share_one_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'callrec.db'}"
    with Catalog(url) as writer, Catalog(url) as reader:
        writer.migrate()
        reader.migrate()
        rec_id = writer.create_recording(new_recording())
        info = reader.get(rec_id)
        assert info is not None
        assert info.path == "2026-03-01/in_0.wav"


def test_memory_sqlite(tmp_path: Path) -> None:
    with Catalog("sqlite://") as catalog:
        catalog.migrate()
        catalog.create_recording(new_recording())
        assert catalog.count() == 1


def test_plain_postgresql_url_uses_psycopg(catalog_pg_database: str) -> None:
    url = catalog_pg_database.replace("postgresql+psycopg://", "postgresql://")
    with Catalog(url) as catalog:
        assert catalog._engine.dialect.driver == "psycopg"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("not a url", "invalid catalogue URL 'not a url'", id="garbage"),
        pytest.param(
            "nosuchdb://host/db", "cannot open catalogue nosuchdb://host/db", id="no-dialect"
        ),
        pytest.param(
            "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/nothing",
            r"cannot open catalogue postgresql\+psycopg://postgres:\*\*\*@127.0.0.1:1/nothing",
            id="postgres-refused",
        ),
    ],
)
def test_cannot_open(url: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message) as info:
        Catalog(url)
    assert "s3cret" not in str(info.value)


def test_cannot_open_sqlite_under_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CatalogError, match=r"cannot open catalogue sqlite:///.*/file/callrec.db"):
        Catalog(f"sqlite:///{blocker / 'callrec.db'}")


def test_cannot_open_a_directory(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"cannot open catalogue .*unable to open database"):
        Catalog(f"sqlite:///{tmp_path}")


def test_cannot_open_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"RIFF" + bytes(4096))
    with pytest.raises(CatalogError, match=r"cannot open catalogue .*file is not a database"):
        Catalog(f"sqlite:///{junk}")


def test_unmigrated_database_refuses_writes(catalog_url: str) -> None:
    with (
        Catalog(catalog_url) as catalog,
        pytest.raises(CatalogError, match=r"^cannot create a recording in .*recordings"),
    ):
        catalog.create_recording(new_recording())


def test_closed_catalog_refuses_calls(catalog: Catalog) -> None:
    catalog.close()
    catalog.close()
    with pytest.raises(CatalogError, match=r"cannot search recordings: catalogue .* is closed"):
        catalog.find()
    with pytest.raises(CatalogError, match=r"cannot migrate: catalogue .* is closed"):
        catalog.migrate()


def test_url_hides_password() -> None:
    with Catalog("sqlite://") as catalog:
        assert catalog.url == "sqlite://"
        assert repr(catalog) == "<Catalog sqlite://>"
    assert repr(catalog) == "<Catalog sqlite:// closed>"


def test_records_cover_every_column() -> None:
    columns = set(Recording.__table__.columns.keys())
    assert {f.name for f in dataclasses.fields(RecordingInfo)} == columns
    assert {f.name for f in dataclasses.fields(NewRecording)} <= columns


def test_migrations_ship_as_package_data() -> None:
    if not PYPROJECT.is_file():
        pytest.skip("not running from a source checkout")
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["callrec"]
    migrations = PACKAGE_DIR / "catalog" / "migrations"
    files = [p for p in migrations.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert any(p.name == "0001_initial.py" for p in files)
    for path in files:
        is_module = path.suffix == ".py" and (path.parent / "__init__.py").is_file()
        relative = path.relative_to(PACKAGE_DIR).as_posix()
        shipped = is_module or any(fnmatch.fnmatch(relative, pat) for pat in patterns)
        assert shipped, f"{relative} would be left out of the wheel"


def test_concurrent_migrations_on_a_fresh_database(catalog_url: str) -> None:
    catalogs = [Catalog(catalog_url) for _ in range(4)]
    errors: list[BaseException] = []

    def run(catalog: Catalog) -> None:
        try:
            catalog.migrate()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in catalogs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for catalog in catalogs:
        catalog.close()
    assert errors == []
    with Catalog(catalog_url) as catalog:
        assert catalog.revision() == head_revision()


def test_database_from_a_newer_callrec_is_refused(catalog: Catalog) -> None:
    with catalog._engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    with pytest.raises(CatalogError, match=r"^cannot migrate in .*'f00d'"):
        catalog.migrate()
