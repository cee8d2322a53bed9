"""Fixtures shared by several test packages: a recording server in this process, and the
catalogue on SQLite and PostgreSQL.

Every catalogue test runs on SQLite (a file under tmp_path) and on PostgreSQL, the server on
127.0.0.1:5432 (user ``postgres``, trust auth: :mod:`tests.support.postgres`). Each test module
gets its own freshly created database, dropped afterwards; each test starts from an empty
schema. The PostgreSQL half is skipped only when no server answers there.

Fault-injection tests never stop or pause that shared server: ``pg_cluster`` is a PostgreSQL
cluster of the test's own (:mod:`tests.support.pgcluster`), to stop, hang and restart.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from callrec.catalog import Catalog
from callrec.service import Service
from tests.support import postgres
from tests.support.pgcluster import PgCluster, unavailable
from tests.support.settings import server_settings


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Service]:
    """A started server with :func:`~tests.support.settings.server_settings`."""
    srv = Service(server_settings(tmp_path))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """A started PostgreSQL cluster of this test's own, on a free port of 127.0.0.1 with the
    empty database ``callrec`` at :attr:`~PgCluster.url`; the test may stop, pause, resume and
    restart it. Removed afterwards, whatever state the test left it in.

    Skipped where PostgreSQL's server programs are not installed (a laptop); under CI (``$CI``
    set) that is a failure instead: ``make test`` installs them."""
    reason = unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (make sysdeps installs them)")
        pytest.skip(reason)
    with PgCluster() as cluster:
        cluster.start()
        yield cluster


@pytest.fixture(scope="module")
def catalog_pg_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, uniquely named PostgreSQL database for this test module; yields its URL."""
    try:
        admin = postgres.admin_connect()
    except psycopg.OperationalError as exc:
        pytest.skip(
            f"no PostgreSQL reachable on {postgres.PG_HOST}:{postgres.PG_PORT}"
            f" as {postgres.PG_USER}: {exc}"
        )
    module = re.sub(r"[^a-z0-9]+", "_", request.module.__name__.rsplit(".", 1)[-1].lower())
    name = f"callrec_{module}_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield postgres.database_url(name)
        finally:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty, not yet migrated catalogue database."""
    if request.param == "sqlite":
        # A directory that does not exist yet: Catalog creates it.
        return f"sqlite:///{tmp_path / 'db' / 'callrec.db'}"
    url: str = request.getfixturevalue("catalog_pg_database")
    postgres.reset_schema(url)
    return url


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    """A migrated, empty catalogue."""
    with Catalog(catalog_url) as cat:
        cat.migrate()
        yield cat
