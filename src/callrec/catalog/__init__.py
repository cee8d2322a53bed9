"""The catalogue of recordings: models, migrations and queries, the only place with SQL.

One row per recording in a SQLite file (default; WAL mode) or a PostgreSQL database::

    catalog = Catalog("sqlite:///var/callrec.db")
    catalog.migrate()
    rec_id = catalog.create_recording(NewRecording(...))
    catalog.checkpoint({rec_id: StreamCounters(received=500)})
    catalog.finish_recording(rec_id, status="complete", stop_reason="phone_stop", ...)
    catalog.find(number="1234", limit=20)

Everything that comes out is a plain :class:`RecordingInfo` with timezone-aware UTC
datetimes; every failure is a :class:`callrec.exceptions.CatalogError`.
"""

from callrec.catalog.records import (
    DIRECTIONS,
    FINAL_STATUSES,
    SOURCES,
    STATUS_COMPLETE,
    STATUS_FAILED,
    STATUS_RECORDING,
    STATUS_RECOVERED,
    STATUSES,
    NewRecording,
    RecordingInfo,
    StreamCounters,
)
from callrec.catalog.store import Catalog, head_revision

__all__ = [
    "DIRECTIONS",
    "FINAL_STATUSES",
    "SOURCES",
    "STATUSES",
    "STATUS_COMPLETE",
    "STATUS_FAILED",
    "STATUS_RECORDING",
    "STATUS_RECOVERED",
    "Catalog",
    "NewRecording",
    "RecordingInfo",
    "StreamCounters",
    "head_revision",
]
