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

from callrec.catalog.archives import ArchiveStore
from callrec.catalog.batch import DuplicatePathError, FinishRecording
from callrec.catalog.database import head_revision
from callrec.catalog.jobs import JobInfo, JobStore  # issue 16 part 3
from callrec.catalog.objects import ObjectInfo, ObjectQueries  # issue 17: the object store
from callrec.catalog.policy import (  # issue 16 R: retention and legal hold
    HOLD_KINDS,
    HoldInfo,
    RetentionPolicy,
    RetentionRule,
    TombstoneInfo,
)
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
)
from callrec.catalog.sipaccounts import SipAccountInfo, SipAccountStore  # issue 6
from callrec.catalog.store import Catalog
from callrec.catalog.transcripts import TranscriptInfo, TranscriptWord  # issue 18
from callrec.catalog.transcriptstore import TranscriptStore
from callrec.catalog.webrecords import (
    AUDIT_ACTIONS,
    MAX_ID,
    ROLE_ADMIN,
    ROLE_LISTENER,
    ROLES,
    AuditInfo,
    NewAuditEntry,
    NoteInfo,
    PasswordChange,
    Scope,
    SearchPage,
    SearchQuery,
    TokenInfo,
    UserInfo,
)
from callrec.rtp.counters import StreamCounters  # the stream core's counters, stored as they are

__all__ = [
    "AUDIT_ACTIONS",
    "DIRECTIONS",
    "FINAL_STATUSES",
    "HOLD_KINDS",
    "MAX_ID",
    "ROLES",
    "ROLE_ADMIN",
    "ROLE_LISTENER",
    "SOURCES",
    "STATUSES",
    "STATUS_COMPLETE",
    "STATUS_FAILED",
    "STATUS_RECORDING",
    "STATUS_RECOVERED",
    "ArchiveStore",
    "AuditInfo",
    "Catalog",
    "DuplicatePathError",
    "FinishRecording",
    "HoldInfo",
    "JobInfo",
    "JobStore",
    "NewAuditEntry",
    "NewRecording",
    "NoteInfo",
    "ObjectInfo",
    "ObjectQueries",
    "PasswordChange",
    "RecordingInfo",
    "RetentionPolicy",
    "RetentionRule",
    "Scope",
    "SearchPage",
    "SearchQuery",
    "SipAccountInfo",
    "SipAccountStore",
    "StreamCounters",
    "TokenInfo",
    "TombstoneInfo",
    "TranscriptInfo",
    "TranscriptStore",
    "TranscriptWord",
    "UserInfo",
    "head_revision",
]
