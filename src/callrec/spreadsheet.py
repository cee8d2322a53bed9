"""CSV that a spreadsheet opens as data, never as formulas (CWE-1236, "CSV injection").

Names and numbers come from phones and callers: a display name ``=HYPERLINK("http://…")``
would become a live link (or worse, with DDE) when an exported list is opened in Excel,
LibreOffice or Google Sheets. Every CSV callrec writes goes through :func:`cell`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from typing import IO, Any, Final

#: Characters that make a spreadsheet read a cell as a formula (OWASP's list).
_TRIGGERS: Final = ("=", "+", "-", "@", "\t", "\r", "\n")
#: A signed plain number (``+4930123456``, ``-3.5``, ``+1 (555) 010-9999``): kept as it is, so
#: E.164 numbers do not grow a quote; with no letters, no function can be called.
_SIGNED_NUMBER: Final = re.compile(r"[+-][0-9][0-9 ().-]*\Z")


def cell(value: Any) -> Any:
    """``value`` made safe for a CSV cell: text that a spreadsheet would evaluate gets a
    leading ``'`` (shown as text, the rest of the value unchanged); numbers and other values
    are returned as they are."""
    if not isinstance(value, str) or not value.startswith(_TRIGGERS):
        return value
    if _SIGNED_NUMBER.match(value):
        return value
    return "'" + value


def row(values: Iterable[Any]) -> list[Any]:
    return [cell(v) for v in values]


def mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: cell(v) for k, v in values.items()}


class SafeWriter:
    """A :func:`csv.writer` whose every cell goes through :func:`cell`."""

    def __init__(self, fh: IO[str]) -> None:
        self._out = csv.writer(fh)

    def writerow(self, values: Iterable[Any]) -> None:
        self._out.writerow(row(values))


class SafeDictWriter:
    """A :class:`csv.DictWriter` whose every cell goes through :func:`cell` (header included)."""

    def __init__(self, fh: IO[str], fieldnames: list[str]) -> None:
        self._out = csv.DictWriter(fh, fieldnames=fieldnames)
        self._fieldnames = fieldnames

    def writeheader(self) -> None:
        self._out.writerow(mapping({k: k for k in self._fieldnames}))

    def writerow(self, values: Mapping[str, Any]) -> None:
        self._out.writerow(mapping(values))

    def writerows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for r in rows:
            self.writerow(r)
