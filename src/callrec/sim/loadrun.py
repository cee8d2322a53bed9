"""A load run's vocabulary: what load to make, against what, and what came of each call.

:class:`LoadOptions` (validated on construction, :class:`LoadError` otherwise), the targets
(:class:`ServerTarget`, a callrec server; :class:`MediaTarget`, any RTP recorder), and what
the phone side hands back: a :class:`CallResult` per call, :class:`Progress` snapshots while
it runs, the whole :class:`LoadRun` with the readings taken meanwhile. Shared by the
generator, the sender processes, the report and ``callrec loadtest``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from callrec.codecs import get_codec
from callrec.exceptions import CallrecError
from callrec.sim.meters import ProcessMeter, Sample

#: Packet duration: every phone callrec serves sends 20 ms packets.
PACKET_MS: Final = 20
TICK: Final = PACKET_MS / 1000
PACKETS_PER_SECOND: Final = 1000 // PACKET_MS
#: Terminators by the names the CLI uses (as ``callrec phone``). Real phones send none.
TERMINATORS: Final[dict[str, bytes]] = {"none": b"", "crlf": b"\r\n", "lf": b"\n", "nul": b"\0"}


class LoadError(CallrecError):
    """The load test cannot run: bad options, a server that does not start, no descriptors."""


# -- options --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadOptions:
    """What load to make. Validated on construction."""

    #: Simulated phones, each one recording call.
    calls: int
    #: Seconds each call streams (``seconds * 50`` packets).
    seconds: float
    #: Calls started per second.
    ramp: float = 100.0
    #: PCMA, PCMU or G722.
    codec: str = "PCMA"
    #: Control message terminator; phones send none.
    terminator: bytes = b""
    #: Recordings checked sample by sample against the sent audio (spread over the calls).
    verify: int = 10
    #: Largest acceptable loss, in percent of the packets sent.
    max_loss: float = 0.0
    #: Seconds to wait for a control answer (connect, start, stop).
    answer_timeout: float = 10.0
    #: A WAV file to loop instead of the built-in test signal.
    audio: Path | None = None
    #: Seed of the devices, SSRCs and the run's first sequence number and timestamp.
    seed: int = 1
    #: Sender processes (0: :func:`~callrec.sim.senders.default_senders`).
    senders: int = 0

    def __post_init__(self) -> None:
        if self.calls < 1:
            raise LoadError(f"calls must be at least 1, not {self.calls}")
        if self.seconds < TICK:
            raise LoadError(f"seconds must be at least {TICK}, not {self.seconds}")
        if self.ramp <= 0:
            raise LoadError(f"ramp must be > 0 calls per second, not {self.ramp}")
        if self.verify < 0 or self.max_loss < 0 or self.answer_timeout <= 0 or self.senders < 0:
            raise LoadError("verify, max_loss and senders must be >= 0, answer_timeout > 0")
        codec = get_codec(self.codec)  # raises UnsupportedCodecError for an unknown name
        if codec.ptime != 20 or not codec.concatenable:
            # The load generator cuts one encoded signal into 20 ms packets.
            raise LoadError(
                f"the load test sends 20 ms packets of PCMA, PCMU, G722 or G.726, not {codec.name}"
            )

    @property
    def packets_per_call(self) -> int:
        return max(1, round(self.seconds * PACKETS_PER_SECOND))


# -- targets ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerTarget:
    """A callrec server: the phones talk to its control port."""

    host: str
    port: int
    #: The recorder's processes to measure (None: no CPU or memory figures).
    meter: ProcessMeter | None = None
    #: The server's catalogue and recordings, for counters and verification.
    database_url: str | None = None
    recordings_dir: Path | None = None
    name: str = "callrec"


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaTarget:
    """Any RTP recorder: call ``i`` streams to ``ports[i]``, no control connection."""

    host: str
    ports: Sequence[int]
    meter: ProcessMeter | None = None
    name: str = "peer"


# -- results ---------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class CallResult:
    """What happened to one simulated phone."""

    index: int
    session_id: str
    device: str
    media_port: int = 0
    #: The loop payload of the call's first packet (it joins the run's clock mid-loop).
    audio_offset: int = 0
    packets_sent: int = 0
    send_errors: int = 0
    #: Seconds from sending the start request to its answer.
    start_seconds: float | None = None
    #: Seconds from sending the stop request to the first byte of its answer (the server
    #: answers once the files are closed and the end is in its journal: "Record first").
    stop_seconds: float | None = None
    #: Wall-clock time (time.time()) the stop request was sent; with the row's ``updated_at``,
    #: stop -> row visible in the catalogue.
    stop_sent_at: float | None = None
    #: Seconds from sending the stop request to the row's finish being committed.
    stop_row_seconds: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Progress:
    """A live snapshot for the progress display."""

    elapsed: float
    calls: int
    started: int
    up: int
    done: int
    failed: int
    packets_sent: int
    packets_per_second: float
    #: Datagrams the kernel dropped on the recorder's sockets (full buffer), so far.
    kernel_drops: int | None
    #: Bytes waiting unread in the recorder's sockets at the last reading.
    backlog_bytes: int | None
    recorder_cpu_percent: float | None
    recorder_rss_kib: int | None
    #: Worst lateness of a send tick since the last snapshot.
    tick_lag_ms: float


@dataclass(slots=True, kw_only=True)
class LoadRun:
    """The phone side of a run and the readings taken while it ran."""

    options: LoadOptions
    calls: list[CallResult]
    began: datetime
    baseline: Sample | None
    #: Readings at the window edges: stream_start/stream_end (first packet to last) and
    #: steady_start/steady_end (every call streaming).
    marks: dict[str, Sample]
    samples: list[Sample]
    #: Lateness of each send tick, seconds.
    lags: list[float]
    kernel_drops: int | None
    #: The senders' niceness while sending.
    nice: int = 0
