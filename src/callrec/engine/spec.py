"""What a front end hands the engine: a recording's description, its media source, why it ended.

Every way a call reaches callrec (a phone's network recording, a SIP call, a USB file) is
described by a :class:`RecordingSpec` and fed by a :class:`MediaSource`; the engine does the
rest of the lifecycle the same way for all of them (see :mod:`callrec.engine.engine`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePath, PurePosixPath
from typing import Any, Final, Protocol, TypeVar

from callrec.codecs import Codec
from callrec.rtp.counters import StreamCounters

P = TypeVar("P", bound=PurePath)

# -- why a recording ended: one vocabulary for every source (the catalogue's stop_reason) ----

#: The phone sent RecordStopRequest.
PHONE_STOP: Final = "phone_stop"
#: The phone's control connection went away mid-call (its recording is kept).
CONNECTION_LOST: Final = "connection_lost"
#: The SIP call ended (a BYE from either side).
HANGUP: Final = "hangup"
#: A phone sent SIP INFO ``Record: off``.
RECORD_OFF: Final = "record_off"
#: A SIP call's 2xx was never acknowledged: callrec hung up.
NO_ACK: Final = "no_ack"
#: The server was stopped (SIGTERM, SIGINT).
SHUTDOWN: Final = "shutdown"
#: The recording reached ``max_duration``.
MAX_DURATION: Final = "max_duration"
#: No RTP came for ``rtp_timeout`` seconds (or never came): the port is freed.
RTP_TIMEOUT: Final = "rtp_timeout"
#: The file reached the largest size a WAV can have (what fits was kept).
MAX_SIZE: Final = "max_size"
#: The disk filled up (what reached it was kept).
DISK_FULL: Final = "disk_full"
#: Another write error (what reached the disk was kept).
WRITE_ERROR: Final = "write_error"
#: A bug in callrec stopped this recording (logged as one; what reached the disk was kept).
INTERNAL_ERROR: Final = "internal_error"
#: Found open after a crash (``kill -9``, power cut) and repaired at start-up.
CRASH: Final = "crash"
#: Made from a phone-local (USB) file.
IMPORTED: Final = "imported"
#: Every stop reason; the engine refuses any other.
STOP_REASONS: Final = frozenset(
    {
        PHONE_STOP,
        CONNECTION_LOST,
        HANGUP,
        RECORD_OFF,
        NO_ACK,
        SHUTDOWN,
        MAX_DURATION,
        RTP_TIMEOUT,
        MAX_SIZE,
        DISK_FULL,
        WRITE_ERROR,
        INTERNAL_ERROR,
        CRASH,
        IMPORTED,
    }
)
#: Reasons that explain a write failure themselves (else a failed close is ``write_error``).
WRITE_FAILURES: Final = frozenset({DISK_FULL, MAX_SIZE})


@dataclass(frozen=True, slots=True, kw_only=True)
class Companion:
    """Another WAV file a recording writes beside its own, fed by the same source (the SIP
    mono mix beside the stereo file); repaired with it after a crash."""

    #: Replaces the ``.wav`` of the recording's name: ``<stem><suffix>``.
    suffix: str
    channels: int = 1
    #: Also note its path in the row's ``extra[section][key]`` (e.g. ``("sip", "mix")``).
    link: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Original:
    """The file a recording was made from, kept byte for byte beside it (USB imports); the
    row records its path and SHA-256."""

    data: bytes
    sha256: str
    suffix: str = ".orig"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingSpec:
    """Everything known about a recording when it starts."""

    #: The catalogue's source: ``server`` (a phone's network recording), ``sip``, ``usb``.
    source: str
    #: The phone's ``id``, or the SIP Call-ID; empty for imports.
    session_id: str
    codec: Codec
    device: str = ""
    #: ``in``, ``out`` or empty.
    direction: str = ""
    local_number: str = ""
    local_name: str = ""
    remote_number: str = ""
    remote_name: str = ""
    #: The phone's address (control connection or SIP signalling); empty for imports.
    peer_address: str = ""
    peer_port: int | None = None
    channels: int = 1
    #: The fields of ``filename_template`` (see :data:`callrec.media.naming.FIELDS`).
    name_fields: Mapping[str, str] = field(default_factory=dict)
    #: Where the file goes, relative to the recordings directory, instead of the template.
    path: PurePosixPath | None = None
    #: When it started; None: now.
    start_time: datetime | None = None
    #: The catalogue row's ``extra`` (JSON).
    extra: Mapping[str, Any] = field(default_factory=dict)
    companions: tuple[Companion, ...] = ()
    original: Original | None = None
    #: A call being recorded now: counted against the session limits, paced by the engine's
    #: tick, shown live. False for a one-shot recording made from a file, which ends at its
    #: start plus its duration.
    live: bool = True

    def who(self) -> dict[str, str]:
        """The fields that say whose call it is, as the catalogue row and the live view
        name them."""
        return {
            "session_id": self.session_id,
            "device": self.device,
            "direction": self.direction,
            "local_number": self.local_number,
            "local_name": self.local_name,
            "remote_number": self.remote_number,
            "remote_name": self.remote_name,
            "peer_address": self.peer_address,
        }


class MediaSource(Protocol):
    """Where a recording's audio comes from. All methods run on the event loop and must not
    block: they decode what the network delivered and return PCM, one chunk per output file
    (the recording's own first, then each companion's, in the spec's order)."""

    #: The UDP port the audio arrives on (catalogued, shown live); None when there is none.
    @property
    def media_port(self) -> int | None: ...

    def pump(self, now: float) -> Sequence[bytes]:
        """PCM for what the source may release at ``now``."""
        ...

    def drain(self, now: float) -> Sequence[bytes]:
        """PCM for everything still held: the recording is ending."""
        ...

    def cut_points(self) -> Sequence[int]:
        """Byte offsets in the last PCM of the first output where it may be cut (packet
        boundaries), used when a file reaches its largest size; empty: at any frame."""
        ...

    def counters(self) -> StreamCounters:
        """The packet counters as they are now (the engine copies them)."""
        ...

    def close(self) -> None:
        """Release what the source holds (sockets, ports, its front end's state). Called
        once, after :meth:`drain`, however the recording ended."""
        ...


class FileSource(MediaSource, Protocol):
    """A source that holds all its audio already (a phone-local file being imported)."""

    #: The file was damaged (cut short...): what it held was read; catalogued ``recovered``.
    damaged: bool

    def chunks(self) -> Iterator[Sequence[bytes]]:
        """PCM per output, in pieces of bounded size; runs on a worker thread."""
        ...


def companion_path(path: P, companion: Companion) -> P:
    """Where ``companion`` of the recording at ``path`` goes."""
    return path.with_name(path.stem + companion.suffix)


def original_path(path: P, original: Original) -> P:
    """Where the ``original`` of the recording at ``path`` is kept."""
    return path.with_name(path.stem + original.suffix)
