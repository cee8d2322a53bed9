"""Fixtures: every catalogue test runs on SQLite (a file under tmp_path) and on PostgreSQL.

PostgreSQL is the server on 127.0.0.1:5432 (user ``postgres``, trust auth). Each test module
gets its own freshly created database, dropped afterwards; each test starts from an empty
schema. The PostgreSQL half is skipped only when no server answers there.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from callrec.catalog import Catalog

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
PG_ADMIN_DB = "postgres"


def _admin_connect() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=PG_HOST,
        port=PG_PORT,
        user=PG_USER,
        dbname=PG_ADMIN_DB,
        autocommit=True,
        connect_timeout=5,
    )


@pytest.fixture(scope="module")
def catalog_pg_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, uniquely named PostgreSQL database for this test module; yields its URL."""
    try:
        admin = _admin_connect()
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL reachable on {PG_HOST}:{PG_PORT} as {PG_USER}: {exc}")
    module = re.sub(r"[^a-z0-9]+", "_", request.module.__name__.rsplit(".", 1)[-1].lower())
    name = f"callrec_{module}_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
        finally:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _reset_pg_schema(url: str) -> None:
    dbname = url.rsplit("/", 1)[-1]
    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True
    ) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty, not yet migrated catalogue database."""
    if request.param == "sqlite":
        # A directory that does not exist yet: Catalog creates it.
        return f"sqlite:///{tmp_path / 'db' / 'callrec.db'}"
    url: str = request.getfixturevalue("catalog_pg_database")
    _reset_pg_schema(url)
    return url


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    """A migrated, empty catalogue."""
    with Catalog(catalog_url) as cat:
        cat.migrate()
        yield cat
