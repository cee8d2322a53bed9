"""The catalogue fixtures (SQLite, and PostgreSQL when one answers), for the import tests."""

from tests.catalog.conftest import catalog, catalog_pg_database, catalog_url  # noqa: F401
