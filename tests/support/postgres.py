"""The PostgreSQL server of the catalogue tests: 127.0.0.1:5432, user ``postgres``, trust
authentication. A test module gets a database of its own (see the ``catalog_pg_database``
fixture in ``tests/conftest.py``)."""

from __future__ import annotations

import psycopg

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
PG_ADMIN_DB = "postgres"


def admin_connect() -> psycopg.Connection[tuple[object, ...]]:
    """A connection to the server's own database, to create and drop test databases."""
    return psycopg.connect(
        host=PG_HOST,
        port=PG_PORT,
        user=PG_USER,
        dbname=PG_ADMIN_DB,
        autocommit=True,
        connect_timeout=5,
    )


def database_url(name: str) -> str:
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def reset_schema(url: str) -> None:
    """Drop everything in the database of ``url``: an empty, not yet migrated catalogue."""
    dbname = url.rsplit("/", 1)[-1]
    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True
    ) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
