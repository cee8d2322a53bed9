"""Alembic migrations of the catalogue (run by :meth:`callrec.catalog.Catalog.migrate`).

A package so that ``env.py`` ships with callrec; ``versions/`` and the template are package
data. No ``alembic.ini`` is used: :func:`callrec.catalog.database.alembic_config` builds the
configuration in code.
"""
