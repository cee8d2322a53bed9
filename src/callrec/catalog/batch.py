"""Group commit's parts that need no :class:`~callrec.catalog.Catalog`: the arguments and error
of the recording writes (:class:`FinishRecording`, :class:`DuplicatePathError`), the values
of a new row, the multi-row insert of a batch, and the checks and stop fields of a finish."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Table, insert, select

from callrec.catalog.models import Recording, clean_text
from callrec.catalog.records import (
    COUNTER_COLUMNS,
    FINAL_STATUSES,
    STATUS_RECORDING,
    NewRecording,
    require_aware,
    require_choice,
    require_counters,
    require_sha256,
)
from callrec.exceptions import CatalogError
from callrec.rtp.counters import StreamCounters

#: Stop-request fields that repeat a column (phone field name -> column); they are kept in
#: ``extra["stop"]`` only when the phone sent a value other than the stored one.
_STOP_FIELD_COLUMNS = {
    "id": "session_id",
    "device": "device",
    "dir": "direction",
    "codec": "codec",
    "local_number": "local_number",
    "local_name": "local_name",
    "remote_number": "remote_number",
    "remote_name": "remote_name",
    "reason": "phone_stop_reason",
}
#: Stop-request fields that say nothing beyond the call itself.
_STOP_FIELDS_DROPPED = frozenset({"cmd"})

#: The ``recording`` table, for the Core statements of batches.
RECORDINGS = cast(Table, Recording.__table__)

#: At most this many values in one ``IN (...)`` of a batch (SQLite caps bound parameters).
IN_CHUNK = 500

#: Ids outside these ranges cannot be in the table: SQLite rowids are 64-bit, an INTEGER
#: column of PostgreSQL 32-bit (and binding a bigger value to it is an error).
SQLITE_IDS = range(-(2**63), 2**63)
POSTGRES_IDS = range(-(2**31), 2**31)


class DuplicatePathError(CatalogError):
    """Another recording already has this file path (the path is the name's claim)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FinishRecording:
    """The arguments of one :meth:`Catalog.finish_recording`, for :meth:`Catalog.finish_recordings`.

    Not validated on construction: :meth:`Catalog.finish_recordings` reports a bad value as
    that item's error, so one bad item does not stop the others.
    """

    rec_id: int
    status: str
    stop_reason: str
    end_time: datetime
    duration: float
    size_bytes: int
    sha256: str | None
    counters: StreamCounters | None
    phone_stop_reason: str | None = None
    stop_fields: Mapping[str, str] | None = None


def counter_values(counters: StreamCounters) -> dict[str, int]:
    """Column -> value of each counter."""
    return {column: getattr(counters, name) for name, column in COUNTER_COLUMNS.items()}


def new_stop_fields(row: object, fields: Mapping[str, str]) -> dict[str, str]:
    kept: dict[str, str] = {}
    for key, value in fields.items():
        if key in _STOP_FIELDS_DROPPED:
            continue
        column = _STOP_FIELD_COLUMNS.get(key)
        if column is not None and getattr(row, column) == value:
            continue
        kept[key] = value
    return kept


def new_row_values(rec: NewRecording) -> dict[str, Any]:
    """Column -> value of the new ``recording`` row of ``rec`` (its fields are columns)."""
    values = {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)}
    values.update(status=STATUS_RECORDING, extra=dict(rec.extra))
    return values


def insert_new(
    connection: Connection, news: Sequence[NewRecording]
) -> list[int | DuplicatePathError]:
    """Insert the rows of ``news`` whose paths are new; :meth:`Catalog.create_recordings`."""
    # The stored form of each path: two paths that differ only in characters no backend
    # can store (see models.clean_text) are the same path in the table.
    keys = [clean_text(rec.path) for rec in news]
    existing: set[str] = set()
    for chunk in chunks(sorted(set(keys)), IN_CHUNK):
        paths = select(RECORDINGS.c.path).where(RECORDINGS.c.path.in_(chunk))
        existing.update(connection.scalars(paths))
    results: list[int | DuplicatePathError] = []
    seen: set[str] = set()
    todo: list[int] = []
    for index, (rec, key) in enumerate(zip(news, keys, strict=True)):
        if key in existing or key in seen:
            where = "already catalogued" if key in existing else "twice in the batch"
            results.append(
                DuplicatePathError(f"cannot create recording: path {rec.path!r} is {where}")
            )
            continue
        seen.add(key)
        todo.append(index)
        results.append(0)  # the id, below
    if todo:
        # One multi-row INSERT ... RETURNING ("insertmanyvalues"). The rows come back in no
        # promised order (SQLAlchemy can only order them on SQLite by going row by row), so
        # each id is matched by its path, unique in the table and in ``todo``.
        statement = insert(RECORDINGS).returning(RECORDINGS.c.id, RECORDINGS.c.path)
        inserted = connection.execute(statement, [new_row_values(news[i]) for i in todo])
        ids: dict[str, int] = {path: rec_id for rec_id, path in inserted}
        for index in todo:
            results[index] = ids[keys[index]]
    return results


#: What finishing a row reads of it: its state and the columns stop fields are compared with.
FINISH_READ_COLUMNS = tuple(
    dict.fromkeys(
        ("id", "status", "stop_reason", "session_id", "extra", *_STOP_FIELD_COLUMNS.values())
    )
)


def check_finish(item: FinishRecording) -> CatalogError | None:
    """The error of a bad value in ``item``, checked as :meth:`Catalog.finish_recording` does."""
    try:
        require_choice("status", item.status, FINAL_STATUSES)
        if not item.stop_reason:
            raise CatalogError("stop_reason must not be empty")
        require_aware("end_time", item.end_time)
        if item.duration < 0:
            raise CatalogError(f"duration must be >= 0, got {item.duration}")
        if item.size_bytes < 0:
            raise CatalogError(f"size_bytes must be >= 0, got {item.size_bytes}")
        require_sha256(item.sha256)
        if item.counters is not None:
            require_counters(item.counters)
    except CatalogError as exc:
        return exc
    return None


_T = TypeVar("_T")


def chunks(values: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
