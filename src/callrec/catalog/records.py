"""The values that cross the catalogue's boundary: plain, frozen dataclasses, no SQL.

:class:`NewRecording` and :class:`~callrec.rtp.counters.StreamCounters` (the stream core's own
counters type) go in, :class:`RecordingInfo` comes out. Values are checked before any SQL runs
(a :class:`NewRecording` on construction, counters by :func:`require_counters`), so a bad value
is refused with a :class:`CatalogError` that names the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from callrec.exceptions import CatalogError
from callrec.rtp.counters import StreamCounters

#: Where a recording came from: network recording, a phone-local (USB) file, SIP INFO.
SOURCES = frozenset({"server", "usb", "sip"})
#: Call direction as the phone sends it in ``dir=``; empty when unknown.
DIRECTIONS = frozenset({"in", "out", ""})

STATUS_RECORDING = "recording"
STATUS_COMPLETE = "complete"
STATUS_RECOVERED = "recovered"
STATUS_FAILED = "failed"
#: Every status a row can have.
STATUSES = frozenset({STATUS_RECORDING, STATUS_COMPLETE, STATUS_RECOVERED, STATUS_FAILED})
#: The statuses :meth:`Catalog.finish_recording` may set.
FINAL_STATUSES = STATUSES - {STATUS_RECORDING}

_SHA256 = re.compile(r"[0-9a-f]{64}")


def require_aware(name: str, value: datetime) -> None:
    """Refuse a naive datetime: the catalogue cannot guess which zone it was meant in."""
    if not isinstance(value, datetime):
        raise CatalogError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise CatalogError(f"{name} must be timezone-aware, got naive {value.isoformat()}")


def require_port(name: str, value: int | None) -> None:
    if value is not None and not 0 <= value <= 65535:
        raise CatalogError(f"{name} must be a port number (0-65535), got {value}")


def require_choice(name: str, value: str, choices: frozenset[str]) -> None:
    if value not in choices:
        allowed = ", ".join(repr(c) for c in sorted(choices))
        raise CatalogError(f"{name} must be one of {allowed}, got {value!r}")


def require_sha256(value: str | None) -> None:
    if value is not None and not _SHA256.fullmatch(value):
        raise CatalogError(f"sha256 must be 64 lowercase hex digits, got {value!r}")


def require_counters(counters: StreamCounters) -> None:
    try:
        counters.check()
    except (ValueError, AttributeError) as exc:
        raise CatalogError(str(exc)) from exc


def require_json(name: str, value: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        raise CatalogError(f"{name} must be a dict, got {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CatalogError(f"{name} must be JSON-serialisable: {exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRecording:
    """What is known when a recording starts (the phone's start request, our choices)."""

    #: ``server`` (network recording), ``usb`` (imported phone-local file) or ``sip``.
    source: str = "server"
    #: The phone's ``id`` token. Not unique: phones reuse ids across calls.
    session_id: str
    #: The phone's MAC as sent in ``device=``.
    device: str
    #: ``in``, ``out`` or empty when the phone did not say.
    direction: str = ""
    local_number: str = ""
    local_name: str = ""
    remote_number: str = ""
    remote_name: str = ""
    #: Codec name as the phone sent it, e.g. ``PCMA``.
    codec: str
    #: The phone's IP address (the control connection's peer); empty for imports.
    peer_address: str = ""
    #: The phone's TCP source port, when known.
    peer_port: int | None = None
    #: The UDP port we answered in ``port=``, when there is one.
    media_port: int | None = None
    #: When the recording started; must be timezone-aware (stored as UTC).
    start_time: datetime
    #: Audio sample rate of the file in Hz (16000 for G.722).
    sample_rate: int
    channels: int = 1
    #: File path relative to the recordings directory; unique in the catalogue.
    path: str
    #: Fields the phone sent that have no column, e.g. ``{"start": {"x_foo": "1"}}``.
    extra: dict[str, Any] = field(default_factory=dict)
    #: For imports: the original file kept beside the recording (relative path) and its
    #: SHA-256, by which importing the same file twice is recognised.
    original_path: str | None = None
    original_sha256: str | None = None
    #: The recording engine's name for it (:mod:`callrec.engine.journal`); unique.
    uid: str | None = None
    #: The node that records it (``node_name``: docs/scaling.md); None when not known.
    node: str | None = None

    def __post_init__(self) -> None:
        require_choice("source", self.source, SOURCES)
        require_choice("direction", self.direction, DIRECTIONS)
        require_aware("start_time", self.start_time)
        require_port("peer_port", self.peer_port)
        require_port("media_port", self.media_port)
        if self.sample_rate <= 0:
            raise CatalogError(f"sample_rate must be > 0, got {self.sample_rate}")
        if self.channels < 1:
            raise CatalogError(f"channels must be >= 1, got {self.channels}")
        if not self.path:
            raise CatalogError("path must not be empty")
        require_json("extra", self.extra)
        require_sha256(self.original_sha256)


#: Counter field -> column of the ``recordings`` table.
COUNTER_COLUMNS = {
    "received": "packets_received",
    "lost": "packets_lost",
    "late": "packets_late",
    "duplicate": "packets_duplicate",
    "foreign": "packets_foreign",
    "malformed": "packets_malformed",
    "other": "packets_other",
    "ssrc_changes": "ssrc_changes",
    "kernel_dropped": "packets_kernel_dropped",
    "clock_changes": "clock_changes",
    "latch_changes": "latch_changes",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingInfo:
    """One catalogue row as plain values, detached from any database session.

    Datetimes are timezone-aware UTC. Column meanings are those of :class:`NewRecording`
    plus what :meth:`Catalog.finish_recording` and :meth:`Catalog.checkpoint` set.
    """

    id: int
    source: str
    session_id: str
    device: str
    direction: str
    local_number: str
    local_name: str
    remote_number: str
    remote_name: str
    codec: str
    peer_address: str
    peer_port: int | None
    media_port: int | None
    start_time: datetime
    end_time: datetime | None
    duration: float | None
    sample_rate: int
    channels: int
    size_bytes: int | None
    sha256: str | None
    path: str
    status: str
    stop_reason: str | None
    phone_stop_reason: str | None
    extra: dict[str, Any]
    original_path: str | None
    original_sha256: str | None
    packets_received: int
    packets_lost: int
    packets_late: int
    packets_duplicate: int
    packets_foreign: int
    packets_malformed: int
    packets_other: int
    ssrc_changes: int
    created_at: datetime
    updated_at: datetime
    #: The engine's name for the recording (None on rows from before the journal).
    uid: str | None = None
    #: Datagrams the kernel dropped on the recording's socket (its queue was full).
    packets_kernel_dropped: int = 0
    #: How often the RTP clock was found to differ from the codec's.
    clock_changes: int = 0
    #: How often the media latch moved to another source port of the phone's address.
    latch_changes: int = 0
    #: The node that recorded it (docs/scaling.md); None on rows from before nodes.
    node: str | None = None

    @property
    def counters(self) -> StreamCounters:
        """The packet counters as a :class:`StreamCounters`."""
        return StreamCounters(
            **{name: getattr(self, column) for name, column in COUNTER_COLUMNS.items()}
        )

    @property
    def finished(self) -> bool:
        """False while the row is still ``recording`` (or was left so by a crash)."""
        return self.status != STATUS_RECORDING


def utcnow() -> datetime:
    return datetime.now(UTC)
