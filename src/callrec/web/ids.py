"""The integers a request may carry: row ids (in paths, queries, bodies and forms) and page
numbers, bounded to what the catalogue can hold.

A number past a signed 64-bit integer never reaches a query (SQLite and PostgreSQL would fail
on it, a 500): FastAPI refuses it while validating, and the app answers 404 for an id in the
path (no such row) and 400 for one in the query. Hand-parsed ids (forms, comma lists) go
through :func:`parse_id`. Every route that takes an integer uses these types;
``tests/web/test_ids.py`` checks that, route by route.
"""

from __future__ import annotations

from typing import Annotated, Final

import annotated_types

from callrec.catalog import MAX_ID
from callrec.catalog.webrecords import MAX_PAGE

#: A row id: 1 to 2**63 - 1.
Id = Annotated[int, annotated_types.Ge(1), annotated_types.Le(MAX_ID)]
#: A 1-based page number whose offset still fits a 64-bit integer.
Page = Annotated[int, annotated_types.Ge(1), annotated_types.Le(MAX_PAGE)]

ID_RANGE: Final = f"1 to {MAX_ID}"


def parse_id(text: str) -> int | None:
    """``text`` as a row id; None when it is not one (not digits, 0, or too large)."""
    value = text.strip()
    if not value.isascii() or not value.isdigit() or len(value) > len(str(MAX_ID)):
        return None
    number = int(value)
    return number if 1 <= number <= MAX_ID else None
