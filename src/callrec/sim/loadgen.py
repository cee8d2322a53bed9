"""The load generator: many simulated phones recording at once, and what the recorder made of it.

Each simulated phone does what a phone set to "record type: Network" does: a TCP control
connection, ``RecordStartRequest`` (no terminator, as phones send it), 20 ms RTP at real-time
pace to the port of the answer, ``RecordStopRequest``. The generator is built not to be the
bottleneck of the measurement:

* the audio is a loop encoded once per run (:class:`AudioLoop`); each call owns one
  ``bytearray`` packet in which only the payload bytes are copied and sequence number and
  timestamp are patched with :func:`struct.pack_into` before each send: no per-packet objects;
* one timer drives every call: a tick every 20 ms on an absolute schedule (a late tick sends
  at once and the schedule does not drift), each tick a tight loop of ``sock.send`` over the
  calls, one connected UDP socket per call as a real phone has;
* calls start on a ramp (calls per second), and each stops after its own ``seconds``.

While it runs, a :class:`ProcessMeter` samples the recorder's processes in ``/proc`` (CPU time
and RSS), and the kernel's per-socket drop counters of the recorder's UDP ports give a live
"lost so far". Afterwards :func:`load_callrec` reads the catalogue's counters for every call
and verifies a sample of the recordings against the audio that was sent
(:func:`verify_recording`): the decoded payloads, sample for sample, except where a lost
packet became silence.

Entry points: :func:`run_loadtest` (synchronous, uvloop; ``callrec loadtest`` and
``benchmarks/ingest.py``), :func:`load_callrec` (async, any running server, tests) and
:func:`run_load` with a :class:`MediaTarget` (RTP only, to given UDP ports: the GStreamer
peer of ``benchmarks/peer_gstreamer.py``). Linux only: the figures come from ``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from callrec.codecs import Codec, get_codec
from callrec.control.connection import START_REQUEST, STOP_REQUEST
from callrec.control.message import ControlMessage
from callrec.exceptions import CallrecError, ControlProtocolError

logger = logging.getLogger(__name__)

#: Packet duration: every phone callrec serves sends 20 ms packets.
PACKET_MS: Final = 20
TICK: Final = PACKET_MS / 1000
PACKETS_PER_SECOND: Final = 1000 // PACKET_MS
#: Length of the audio loop. Long enough that a shifted file cannot pass for a right one.
LOOP_SECONDS: Final = 10.0
#: An unterminated answer is whole once nothing more came for this long (as the phone reads).
ANSWER_IDLE: Final = 0.05
_ANSWER_TERMINATOR: Final = re.compile(rb"\r\n|\n|\0")
_MAX_ANSWER: Final = 8192
#: How often the recorder's processes and sockets are read while the load runs.
SAMPLE_INTERVAL: Final = 0.5
#: Reading /proc/net/udp costs a few ms with thousands of sockets: every this many samples.
UDP_STATS_EVERY: Final = 4
#: The process tree of a spawned server is re-read this often (workers may come and go).
TREE_REFRESH: Final = 5.0
#: The verification looks this far for the first packet of a file whose start was lost.
MAX_LEAD_SEARCH: Final = 1000
#: Terminators by the names the CLI uses (as ``callrec phone``). Real phones send none.
TERMINATORS: Final[dict[str, bytes]] = {"none": b"", "crlf": b"\r\n", "lf": b"\n", "nul": b"\0"}
#: Media ports of a spawned server: below the kernel's ephemeral range (32768-60999), where
#: the generator's own sockets live.
SPAWN_MEDIA_PORT_MIN: Final = 20000
SPAWN_MEDIA_PORT_MAX: Final = 32767
#: Niceness of the sender processes while they send. The generator stands in for phones,
#: which are machines of their own: the recorder under test (hundreds of GStreamer processes,
#: or a saturated server) must not starve it, or it measures its own lateness. Needs root
#: (else the sender keeps its priority and the report says so); children we start (server,
#: pipelines) are put back to the default.
SENDER_NICE: Final = -10
#: A send tick later than this (p99) means the generator could not keep real time.
LATE_TICK_MS: Final = 100.0
#: Calls one sender process takes by default (see :func:`default_senders`).
CALLS_PER_SENDER: Final = 1500

#: RTP header bytes 2-7: sequence number and timestamp, patched before every send.
_SEQ_TS: Final = struct.Struct("!HI")
#: RTP header bytes 8-11: the SSRC, patched per call.
_SSRC: Final = struct.Struct("!I")
_HEADER: Final = struct.Struct("!BBHII")
_RTP_V2: Final = 0x80
_MARKER: Final = 0x80

Pcm = npt.NDArray[np.int16]


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
    #: Sender processes (0: :func:`default_senders`).
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
        get_codec(self.codec)  # raises UnsupportedCodecError for an unknown name

    @property
    def packets_per_call(self) -> int:
        return max(1, round(self.seconds * PACKETS_PER_SECOND))


# -- the audio ------------------------------------------------------------------------------


def speech_signal(seconds: float, rate: int, seed: int = 7) -> Pcm:
    """A deterministic speech-like signal with sound in every 20 ms frame: tones, a warble
    and a little noise. No frame decodes to digital silence, which verification relies on."""
    t = np.arange(round(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    x = (
        0.22 * np.sin(2 * np.pi * 440 * t)
        + 0.12 * np.sin(2 * np.pi * 1250 * t)
        + 0.10 * np.sin(2 * np.pi * (300 + 200 * np.sin(2 * np.pi * 0.5 * t)) * t)
        + 0.02 * rng.standard_normal(t.size)
    )
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)  # syllable-like loudness changes
    return np.asarray(np.clip(x * envelope * 32767, -32768, 32767), dtype=np.int16)


@dataclass(frozen=True, slots=True)
class AudioLoop:
    """The payloads every call sends, in a loop: packet ``i`` carries ``payloads[i % n]``."""

    codec: Codec
    payloads: tuple[bytes, ...]
    #: RTP timestamp units per packet (G.722: 160 at its 8 kHz RTP clock).
    units: int
    #: PCM samples per packet at the codec's sample rate.
    frame_samples: int

    @classmethod
    def build(cls, codec: Codec, pcm: npt.ArrayLike | None = None) -> AudioLoop:
        """Encode ``pcm`` (default: :func:`speech_signal` of :data:`LOOP_SECONDS`) once."""
        from callrec.sim.phone import build_packets

        if pcm is None:
            pcm = speech_signal(LOOP_SECONDS, codec.sample_rate)
        packets = build_packets(pcm, codec, ssrc=0, packet_ms=PACKET_MS)
        if not packets:
            raise LoadError("the audio loop is empty")
        payloads = tuple(p.payload for p in packets)
        frame_samples = codec.sample_rate * PACKET_MS // 1000
        # Verification tells a lost packet (silence written in its place) from audio by the
        # silence: a frame that decodes to digital silence would make that ambiguous.
        decoder = codec.decoder()
        for i, payload in enumerate(payloads):
            if not any(decoder.decode(payload)):
                raise LoadError(
                    f"the audio loop is digital silence at {i * PACKET_MS} ms; verification "
                    "needs sound in every 20 ms frame"
                )
        return cls(codec, payloads, codec.timestamp_units(len(payloads[0])), frame_samples)

    @classmethod
    def for_options(cls, options: LoadOptions) -> AudioLoop:
        codec = get_codec(options.codec)
        if options.audio is None:
            return cls.build(codec)
        from callrec.sim.phone import load_audio

        pcm = load_audio(options.audio, codec.sample_rate)
        return cls.build(codec, pcm[: round(LOOP_SECONDS * codec.sample_rate)])

    def payload(self, index: int) -> bytes:
        return self.payloads[index % len(self.payloads)]


# -- measuring processes ----------------------------------------------------------------------

_CLK_TCK: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_KIB: Final = (os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096) // 1024


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process (all its threads), or None if it is gone."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    # The command name is in parentheses and may contain spaces: split after it.
    fields = text[text.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def process_rss_kib(pid: int) -> int | None:
    """Resident set size of one process in KiB (``VmRSS``), or None if it is gone."""
    text = _read(f"/proc/{pid}/statm")
    if text is None:
        return None
    return int(text.split()[1]) * _PAGE_KIB


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants that exist now."""
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return [root]
    for name in names:
        if not name.isdigit():
            continue
        text = _read(f"/proc/{name}/stat")
        if text is None:
            continue
        ppid = int(text[text.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def listener_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` on this machine, if we may see it."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        text = _read(table) or ""
        for line in text.splitlines()[1:]:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{parts[9]}]")
    if not inodes:
        return None
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{name}/fd/{fd}") in inodes:
                    return int(name)
    return None


def udp_socket_stats(ports: set[int]) -> dict[str, tuple[int, int]]:
    """Per socket (by inode) bound to one of ``ports``: (bytes queued unread, datagrams the
    kernel dropped because the receive buffer was full)."""
    out: dict[str, tuple[int, int]] = {}
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        text = _read(table) or ""
        for line in text.splitlines()[1:]:
            parts = line.split()
            if len(parts) < 13 or int(parts[1].rsplit(":", 1)[1], 16) not in ports:
                continue
            out[parts[9]] = (int(parts[4].split(":")[1], 16), int(parts[12]))
    return out


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of the recorder's processes and of this process."""

    #: time.monotonic() of the reading.
    at: float
    #: CPU seconds used so far by the recorder's processes (summed).
    cpu: float
    #: Their resident memory, summed, in KiB.
    rss_kib: int
    processes: int
    #: CPU seconds used so far by this process (the generator).
    own_cpu: float


class ProcessMeter:
    """Reads CPU time and RSS of a set of processes (a tree, or a list) from ``/proc``."""

    def __init__(self, pids: Callable[[], Iterable[int]]) -> None:
        self._pids_fn = pids
        self._pids: list[int] = []
        self._pids_at = -TREE_REFRESH
        self.samples: list[Sample] = []

    @classmethod
    def tree(cls, root: int) -> ProcessMeter:
        return cls(lambda: process_tree(root))

    @classmethod
    def of(cls, pids: Sequence[int]) -> ProcessMeter:
        fixed = list(pids)
        return cls(lambda: fixed)

    def sample(self) -> Sample:
        now = time.monotonic()
        if now - self._pids_at >= TREE_REFRESH:
            self._pids = list(self._pids_fn())
            self._pids_at = now
        cpu = 0.0
        rss = alive = 0
        for pid in self._pids:
            seconds = process_cpu_seconds(pid)
            kib = process_rss_kib(pid)
            if seconds is None or kib is None:
                continue
            cpu += seconds
            rss += kib
            alive += 1
        times = os.times()
        reading = Sample(now, cpu, rss, alive, times.user + times.system)
        self.samples.append(reading)
        return reading


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
    #: answers once the recording is finalised and catalogued).
    stop_seconds: float | None = None
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


@dataclass(frozen=True, slots=True, kw_only=True)
class FileCheck:
    """The verification of one recording against the audio its phone sent."""

    call: int
    path: str
    ok: bool
    #: 20 ms frames equal to the decoded payload sent in that place.
    audio_frames: int = 0
    #: Frames of silence, where the recorder filled a lost packet.
    silent_frames: int = 0
    #: Sent packets missing before the first and after the last frame of the file.
    leading_missing: int = 0
    trailing_missing: int = 0
    mismatched: int = 0
    problem: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecorderTotals:
    """What the recorder says it got, summed over the calls."""

    received: int
    recorded: int
    lost: int
    late: int
    #: Calls whose recording is finalised (catalogue status complete / file closed).
    finalised: int


@dataclass(slots=True, kw_only=True)
class LoadReport:
    """Every figure of one load test; :meth:`as_dict` for ``--json``."""

    recorder: str
    codec: str
    calls: int
    calls_ok: int
    seconds: float
    ramp: float
    packets_sent: int
    send_errors: int
    packets_received: int | None
    packets_recorded: int | None
    #: Gaps the recorder saw in the sequence numbers (its ``lost`` counter).
    packets_lost: int | None
    packets_late: int | None
    #: (sent - received) / sent, and late / sent, in percent.
    loss_percent: float | None
    late_percent: float | None
    kernel_drops: int | None
    #: Recorder CPU in percent of one core over the window, per call, per packet.
    cpu_percent: float | None
    cpu_window: str
    cpu_window_seconds: float
    cpu_per_call_percent: float | None
    cpu_us_per_packet: float | None
    rss_before_kib: int | None
    rss_peak_kib: int | None
    rss_per_call_kib: float | None
    processes: int
    start_ms_median: float | None
    start_ms_p99: float | None
    stop_ms_median: float | None
    stop_ms_p99: float | None
    tick_lag_ms_p99: float
    tick_lag_ms_max: float
    #: The generator's own CPU over the same window, percent of one core (when the recorder
    #: runs in this process, as in the tests, it includes the recorder).
    loadgen_cpu_percent: float | None
    loadgen_nice: int
    verified: int
    verify_failed: int
    checks: list[FileCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: Remarks that are no failure (how a figure was taken).
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["ok"] = self.ok
        return data


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


# -- the generator ---------------------------------------------------------------------------

#: Per sender process, in shared memory: what the progress display and the CPU windows need.
_STARTING, _STARTED, _JOINING, _UP, _DONE, _FAILED, _SENT, _ALL_STARTED, _ENDED_ANY = range(9)
_FIELDS: Final = 9


class _Shared:
    """Counters of every sender process and the media port of every call, in shared memory
    (a few stores per tick), so the first process can mark windows and show progress."""

    def __init__(self, senders: int, calls: int) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.senders = senders
        self.counters: Any = ctx.RawArray("q", senders * _FIELDS)
        self.ports: Any = ctx.RawArray("i", calls)

    def total(self, name: int) -> int:
        c = self.counters
        return int(sum(c[s * _FIELDS + name] for s in range(self.senders)))

    def every(self, name: int) -> bool:
        c = self.counters
        return all(c[s * _FIELDS + name] for s in range(self.senders))


class _Control:
    """A phone's TCP control connection: one request at a time, answers read as phones do."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, terminator: bytes
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.terminator = terminator

    async def request(
        self, fields: Sequence[tuple[str, str | int]], timeout: float
    ) -> tuple[dict[str, str], float]:
        """Send one message; return the answer and the seconds until its first byte."""
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        self.writer.write(ControlMessage.build(*fields).serialize() + self.terminator)
        await asyncio.wait_for(self.writer.drain(), timeout)
        deadline = sent_at + timeout
        first: float | None = None
        buf = bytearray()
        while True:
            match = _ANSWER_TERMINATOR.search(buf)
            if match is not None and buf[: match.start()].strip():
                buf = buf[: match.start()]
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LoadError(f"no answer within {timeout:g} s")
            try:
                chunk = await asyncio.wait_for(
                    self.reader.read(4096), min(remaining, ANSWER_IDLE) if buf else remaining
                )
            except TimeoutError:
                if buf:
                    break  # quiet after some bytes: that was the whole (unterminated) answer
                continue
            if not chunk:
                if buf:
                    break
                raise LoadError("the server closed the control connection")
            if first is None:
                first = loop.time()
            buf += chunk
            if len(buf) > _MAX_ANSWER:
                raise LoadError(f"answer longer than {_MAX_ANSWER} bytes")
        try:
            answer = ControlMessage.parse(bytes(buf)).as_dict()
        except ControlProtocolError as exc:
            raise LoadError(f"unreadable answer: {exc}") from None
        assert first is not None
        return answer, first - sent_at

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


class _Stream:
    """One streaming call: its connected UDP socket's send and its SSRC."""

    __slots__ = ("call", "control", "end_tick", "send", "sock", "ssrc")

    def __init__(
        self, call: CallResult, sock: socket.socket, ssrc: int, control: _Control | None
    ) -> None:
        self.call = call
        self.sock = sock
        self.send = sock.send
        self.ssrc = ssrc
        self.control = control
        self.end_tick = 0


def plan_calls(options: LoadOptions) -> list[CallResult]:
    """Every call's identity, the same in every sender process. One device (MAC) per phone
    under a per-run prefix: callrec limits sessions per device, and this run's catalogue
    rows are found by it."""
    prefix = f"{random.Random(f'{options.seed}:device').getrandbits(24):06x}"
    return [
        CallResult(index=i, session_id=str(10000 + i), device=f"{prefix}{i:06x}")
        for i in range(options.calls)
    ]


def _ssrc(options: LoadOptions, index: int) -> int:
    return random.Random(f"{options.seed}:ssrc:{index}").getrandbits(32)


@dataclass(slots=True, kw_only=True)
class _Part:
    """What one sender process hands back."""

    calls: list[CallResult]
    lags: list[float]


class LoadGenerator:
    """Starts a share of the calls on the ramp, streams them, stops them.

    All calls in a process share one packet buffer: a tick copies the loop's next payload and
    the tick's sequence number and timestamp into it once, then per call only the SSRC is
    patched before ``send``. So every call's sequence numbers and timestamps follow the run's
    clock (its first packet carries whatever the clock says when it joins, an arbitrary
    starting point as RFC 3550 wants) and call ``i``'s packet ``k`` carries loop payload
    ``audio_offset + k``; verification knows the offset.
    """

    def __init__(
        self,
        options: LoadOptions,
        target: ServerTarget | MediaTarget,
        audio: AudioLoop,
        *,
        indices: Sequence[int] | None = None,
        shared: _Shared | None = None,
        slot: int = 0,
        progress: Callable[[Progress], None] | None = None,
    ) -> None:
        if isinstance(target, MediaTarget) and len(target.ports) < options.calls:
            raise LoadError(f"{options.calls} calls need as many ports, got {len(target.ports)}")
        self.options = options
        self.target = target
        self.audio = audio
        self.meter = target.meter if slot == 0 else None
        self.calls = plan_calls(options)
        self.indices = list(range(options.calls)) if indices is None else list(indices)
        self.shared = shared or _Shared(1, options.calls)
        self._base = self.shared.counters
        self._slot = slot * _FIELDS
        self._progress = progress
        #: Where the run's clock starts (sequence number and timestamp of tick 0).
        self._clock_base = random.Random(f"{options.seed}:clock").getrandbits(32)
        pt = audio.codec.payload_type
        self._packet = bytearray(_HEADER.pack(_RTP_V2, pt, 0, 0, 0) + audio.payloads[0])
        self._joining: list[_Stream] = []
        self._active: dict[int, _Stream] = {}
        self._ending: dict[int, list[_Stream]] = {}
        self._errors: dict[int, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._tick_no = 0
        self._lags: list[float] = []
        self._marks: dict[str, Sample] = {}
        self._udp_seen: dict[str, int] = {}
        self._udp_backlog: int | None = None

    # -- counters ---------------------------------------------------------------------------

    def _add(self, name: int, n: int = 1) -> None:
        self._base[self._slot + name] += n

    def _set(self, name: int, value: int) -> None:
        self._base[self._slot + name] = value

    def _get(self, name: int) -> int:
        return int(self._base[self._slot + name])

    # -- calls ------------------------------------------------------------------------------

    async def _start_call(self, i: int) -> None:
        call = self.calls[i]
        control: _Control | None = None
        sock: socket.socket | None = None
        try:
            if isinstance(self.target, MediaTarget):
                host, port = self.target.host, self.target.ports[i]
            else:
                control, host, port = await self._handshake(call)
            call.media_port = port
            self.shared.ports[i] = port
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect((host, port))
            self._joining.append(_Stream(call, sock, _ssrc(self.options, i), control))
            self._add(_STARTED)
            self._set(_JOINING, len(self._joining))
        except (LoadError, OSError, TimeoutError) as exc:
            call.error = f"start: {exc}" if str(exc) else f"start: {type(exc).__name__}"
            self._add(_DONE)
            self._add(_FAILED)
            if sock is not None:
                sock.close()
            if control is not None:
                await control.close()
        finally:
            self._add(_STARTING, -1)

    async def _handshake(self, call: CallResult) -> tuple[_Control, str, int]:
        assert isinstance(self.target, ServerTarget)
        timeout = self.options.answer_timeout
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.target.host, self.target.port), timeout
            )
        except TimeoutError:
            raise LoadError(
                f"timeout connecting to {self.target.host}:{self.target.port}"
            ) from None
        control = _Control(reader, writer, self.options.terminator)
        try:
            answer, seconds = await control.request(
                [
                    ("cmd", START_REQUEST),
                    ("id", call.session_id),
                    ("device", call.device),
                    ("remote_number", "2011"),
                    ("remote_name", ""),
                    ("local_number", str(100000 + call.index)),
                    ("local_name", ""),
                    ("dir", "out"),
                    ("codec", self.audio.codec.name),
                ],
                timeout,
            )
            if answer.get("result") != "success":
                raise LoadError(f"refused: {answer.get('reason') or answer}")
            port = int(answer.get("port", "0"))
            if not 0 < port < 65536:
                raise LoadError(f"start answer has no usable port: {answer}")
            server = answer.get("server", "").strip()
            if server in ("", "0.0.0.0", "::"):
                server = self.target.host
        except BaseException:
            await control.close()
            raise
        call.start_seconds = seconds
        return control, server, port

    async def _stop_call(self, stream: _Stream) -> None:
        call = stream.call
        stream.sock.close()
        control = stream.control
        try:
            if control is not None:
                answer, seconds = await control.request(
                    [
                        ("cmd", STOP_REQUEST),
                        ("id", call.session_id),
                        ("remote_number", "2011"),
                        ("remote_name", ""),
                        ("local_number", str(100000 + call.index)),
                        ("local_name", ""),
                        ("reason", ""),
                    ],
                    self.options.answer_timeout,
                )
                call.stop_seconds = seconds
                if answer.get("result") != "success":
                    call.error = f"stop refused: {answer.get('reason') or answer}"
        except (LoadError, OSError, TimeoutError) as exc:
            call.error = f"stop: {exc}" if str(exc) else f"stop: {type(exc).__name__}"
        finally:
            if control is not None:
                await control.close()
            self._add(_DONE)
            if call.error:
                self._add(_FAILED)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the clock --------------------------------------------------------------------------

    def _tick(self) -> None:
        """One 20 ms step: a packet to every streaming call. The hot loop of the generator."""
        n = self._tick_no
        self._tick_no = n + 1
        packet = self._packet
        audio = self.audio
        packet[12:] = audio.payloads[n % len(audio.payloads)]
        clock = self._clock_base + n
        _SEQ_TS.pack_into(packet, 2, clock & 0xFFFF, (clock * audio.units) & 0xFFFFFFFF)
        patch = _SSRC.pack_into
        for s in self._active.values():
            patch(packet, 8, s.ssrc)
            try:
                s.send(packet)
            except OSError:  # a full send buffer, or an ICMP error from an earlier packet
                self._errors[s.call.index] = self._errors.get(s.call.index, 0) + 1
        sent = len(self._active)
        if self._joining:
            joining, self._joining = self._joining, []
            # A call's first packet carries the marker bit, as at the start of a talkspurt.
            packet[1] |= _MARKER
            for s in joining:
                patch(packet, 8, s.ssrc)
                try:
                    s.send(packet)
                except OSError:
                    self._errors[s.call.index] = self._errors.get(s.call.index, 0) + 1
                s.call.audio_offset = n
                s.end_tick = n + self.options.packets_per_call - 1
                self._ending.setdefault(s.end_tick, []).append(s)
                self._active[s.call.index] = s
            packet[1] &= ~_MARKER & 0xFF
            sent += len(joining)
            self._set(_JOINING, 0)
        ending = self._ending.pop(n, None)
        if ending:
            self._set(_ENDED_ANY, 1)
            for s in ending:
                del self._active[s.call.index]
                call = s.call
                call.send_errors = self._errors.pop(call.index, 0)
                call.packets_sent = self.options.packets_per_call - call.send_errors
                self._spawn(self._stop_call(s))
        self._add(_SENT, sent)
        self._set(_UP, len(self._active))
        if self.meter is not None:
            self._mark_windows()

    def _mark_windows(self) -> None:
        """In the first process: note the edges of the CPU windows, over all senders."""
        shared, marks = self.shared, self._marks
        if "stream_start" not in marks:
            if shared.total(_SENT):
                self._mark("stream_start")
            return
        settled = (
            shared.every(_ALL_STARTED)
            and shared.total(_STARTING) == 0
            and shared.total(_JOINING) == 0
        )
        if "steady_start" not in marks:
            if (
                settled
                and not shared.total(_ENDED_ANY)
                and shared.total(_UP) == shared.total(_STARTED)
            ):
                self._mark("steady_start")
        elif "steady_end" not in marks and shared.total(_ENDED_ANY):
            self._mark("steady_end")
        if "stream_end" not in marks and settled and shared.total(_UP) == 0:
            self._mark("stream_end")

    def _mark(self, name: str) -> None:
        assert self.meter is not None
        self._marks[name] = self.meter.sample()

    def _finished(self) -> bool:
        mine = (
            self._get(_ALL_STARTED)
            and self._get(_STARTING) == 0
            and not self._active
            and not self._joining
        )
        if not mine or self.meter is None:
            return bool(mine)
        # The first process keeps time until every sender is done, to mark the windows.
        shared = self.shared
        return bool(
            shared.every(_ALL_STARTED)
            and shared.total(_STARTING) == 0
            and shared.total(_JOINING) == 0
            and shared.total(_UP) == 0
        )

    async def _clock(self, begin: float, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        next_at = begin
        lags = self._lags
        while loop.time() < deadline:
            delay = next_at - loop.time()
            # Always yield, even when late: the handshakes and stops run on this loop too.
            await asyncio.sleep(delay if delay > 0 else 0)
            now = loop.time()
            if now < next_at:
                continue
            lags.append(now - next_at)
            self._tick()
            next_at += TICK
            if self._finished():
                return
        raise LoadError("the load did not finish in time (the generator or the server stalled)")

    async def _starter(self, begin: float) -> None:
        loop = asyncio.get_running_loop()
        for i in self.indices:
            delay = begin + i / self.options.ramp - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._add(_STARTING)
            self._spawn(self._start_call(i))
        self._set(_ALL_STARTED, 1)

    async def _watch(self) -> None:
        """Sample the recorder; feed the progress display."""
        loop = asyncio.get_running_loop()
        begin = loop.time()
        shared = self.shared
        last_sent, last_at = 0, begin
        last_cpu: Sample | None = None
        lag_seen = 0
        n = 0
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            n += 1
            now = loop.time()
            reading = self.meter.sample() if self.meter is not None else None
            if n % UDP_STATS_EVERY == 0:
                self._read_udp_stats()
            if self._progress is None:
                continue
            cpu_pct = None
            if reading is not None and last_cpu is not None and reading.at > last_cpu.at:
                cpu_pct = 100 * (reading.cpu - last_cpu.cpu) / (reading.at - last_cpu.at)
            last_cpu = reading
            lags = self._lags[lag_seen:]
            lag_seen = len(self._lags)
            sent = shared.total(_SENT)
            self._progress(
                Progress(
                    elapsed=now - begin,
                    calls=self.options.calls,
                    started=shared.total(_STARTED),
                    up=shared.total(_UP),
                    done=shared.total(_DONE),
                    failed=shared.total(_FAILED),
                    packets_sent=sent,
                    packets_per_second=(sent - last_sent) / max(now - last_at, 1e-9),
                    kernel_drops=sum(self._udp_seen.values()) if self._udp_seen else None,
                    backlog_bytes=self._udp_backlog,
                    recorder_cpu_percent=cpu_pct,
                    recorder_rss_kib=reading.rss_kib if reading is not None else None,
                    tick_lag_ms=1000 * max(lags, default=0.0),
                )
            )
            last_sent, last_at = sent, now

    def _read_udp_stats(self) -> None:
        ports = {p for p in self.shared.ports if p}
        if not ports:
            return
        stats = udp_socket_stats(ports)
        for inode, (_queued, drops) in stats.items():
            self._udp_seen[inode] = drops
        self._udp_backlog = sum(q for q, _ in stats.values())

    async def run(self, begin_wall: float | None = None) -> _Part:
        """Make this process's share of the load; return when it has stopped (or failed).

        ``begin_wall`` (``time.time()``) lines the clocks of several senders up.
        """
        options = self.options
        loop = asyncio.get_running_loop()
        begin = loop.time()
        if begin_wall is not None:
            begin += max(0.0, begin_wall - time.time())
        limit = options.calls / options.ramp + options.seconds + 4 * options.answer_timeout + 30.0
        watch = asyncio.create_task(self._watch()) if self.meter is not None else None
        starter = asyncio.create_task(self._starter(begin))
        try:
            await self._clock(begin, begin + limit)
            await starter
            if self.meter is not None:
                self._read_udp_stats()
            # The stops: each bounded by its answer timeout, and all of them by this.
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=2 * options.answer_timeout + 5)
        finally:
            pending = [t for t in (watch, starter) if t is not None] + list(self._tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for s in [*self._active.values(), *self._joining]:
                s.call.error = s.call.error or "not finished: the run was cut short"
                s.call.packets_sent = self._tick_no - s.call.audio_offset
                s.sock.close()
                if s.control is not None:
                    s.control.writer.close()
        mine = set(self.indices)
        for call in self.calls:
            if (
                call.index in mine
                and call.error is None
                and call.stop_seconds is None
                and isinstance(self.target, ServerTarget)
            ):
                call.error = "stop: not answered"
        return _Part(calls=[c for c in self.calls if c.index in mine], lags=list(self._lags))

    @property
    def kernel_drops(self) -> int | None:
        return sum(self._udp_seen.values()) if self._udp_seen else None

    @property
    def marks(self) -> dict[str, Sample]:
        return dict(self._marks)


@contextlib.contextmanager
def sender_priority() -> Iterator[int]:
    """Raise this thread's priority to :data:`SENDER_NICE` if allowed; yield the niceness it
    runs at; put it back afterwards."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, min(before, SENDER_NICE))
    try:
        yield os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, before)


def default_senders(calls: int) -> int:
    """Sender processes for ``calls``: one per :data:`CALLS_PER_SENDER`, at most one per core.
    A loopback send costs ~5-7 us of CPU here (the kernel delivers the datagram in the
    sender's time), so one process tops out near 2,000 calls."""
    return max(1, min(os.cpu_count() or 1, -(-calls // CALLS_PER_SENDER)))


def _sender_main(
    options: LoadOptions,
    target: ServerTarget | MediaTarget,
    indices: list[int],
    shared: _Shared,
    slot: int,
    conn: Any,
) -> None:  # pragma: no cover - runs in a sender process
    """A sender process: say ready, take the start time, run its share, send it back."""
    audio = AudioLoop.for_options(options)
    generator = LoadGenerator(options, target, audio, indices=indices, shared=shared, slot=slot)
    conn.send("ready")
    if not conn.poll(60):
        return
    begin_wall = conn.recv()
    try:
        with sender_priority():
            part = run_async(generator.run(begin_wall))
    except LoadError as exc:
        part = _Part(calls=[], lags=[])
        logger.error("sender %d: %s", slot, exc)
    conn.send(part)
    conn.close()


async def run_load(
    options: LoadOptions,
    target: ServerTarget | MediaTarget,
    *,
    audio: AudioLoop | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> LoadRun:
    """Make the load against ``target``: the phone side and the readings, no verdict.

    With ``options.senders`` > 1, calls ``i`` with ``i % senders == s`` go out from sender
    process ``s`` (this process is sender 0 and takes the readings).
    """
    audio = audio or AudioLoop.for_options(options)
    senders = options.senders or default_senders(options.calls)
    senders = min(senders, options.calls)
    shared = _Shared(senders, options.calls)
    share = [list(range(s, options.calls, senders)) for s in range(senders)]
    generator = LoadGenerator(
        options, target, audio, indices=share[0], shared=shared, progress=progress
    )
    began = datetime.now(UTC)
    baseline = generator.meter.sample() if generator.meter is not None else None
    children: list[tuple[Any, Any]] = []
    priority = contextlib.ExitStack()
    try:
        nice = priority.enter_context(sender_priority())
        begin_wall = None
        if senders > 1:
            children = _start_senders(options, target, share, shared)
            begin_wall = time.time() + 0.2
            for _, conn in children:
                conn.send(begin_wall)
        part = await generator.run(begin_wall)
        parts = [part]
        loop = asyncio.get_running_loop()
        for process, conn in children:
            deadline = loop.time() + 4 * options.answer_timeout + 30
            while not conn.poll() and process.is_alive() and loop.time() < deadline:
                await asyncio.sleep(0.05)
            if conn.poll():
                parts.append(conn.recv())
    finally:
        priority.close()
        for process, conn in children:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
            conn.close()
    calls = plan_calls(options)
    for piece in parts:
        for call in piece.calls:
            calls[call.index] = call
    answered = {c.index for piece in parts for c in piece.calls}
    for call in calls:
        if call.index not in answered:
            call.error = "its sender process did not report"
    return LoadRun(
        options=options,
        calls=calls,
        began=began,
        baseline=baseline,
        marks=generator.marks,
        samples=list(generator.meter.samples) if generator.meter is not None else [],
        lags=[lag for piece in parts for lag in piece.lags],
        kernel_drops=generator.kernel_drops,
        nice=nice,
    )


def _start_senders(
    options: LoadOptions,
    target: ServerTarget | MediaTarget,
    share: list[list[int]],
    shared: _Shared,
) -> list[tuple[Any, Any]]:
    """Start sender processes 1.. and wait (bounded) until each is ready."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    plain = dataclasses.replace(target, meter=None)  # the meter stays here
    children = []
    for slot in range(1, len(share)):
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=_sender_main,
            args=(options, plain, share[slot], shared, slot, child),
            name=f"callrec-loadgen-{slot}",
            daemon=True,
        )
        process.start()
        child.close()
        children.append((process, parent))
    for process, conn in children:
        if not conn.poll(60) or conn.recv() != "ready":
            raise LoadError(f"sender process {process.name} did not start")
    return children


# -- verification ----------------------------------------------------------------------------


def verify_recording(
    path: Path,
    audio: AudioLoop,
    packets_sent: int,
    *,
    audio_offset: int = 0,
    call: int = -1,
    expected_audio_frames: int | None = None,
) -> FileCheck:
    """Compare a recording with what its phone sent, frame by frame.

    Frame ``k`` of the file must be the decoded payload of packet ``lead + k`` (``lead``:
    packets lost before the first one recorded; packet ``j`` carries loop payload
    ``audio_offset + j``), decoded by callrec's decoder fed every
    payload recorded before it, exactly; or silence, where a packet was lost or came late.
    ``expected_audio_frames`` (the recorder's own count) must equal the frames of audio.
    """
    codec = audio.codec
    name = str(path)

    def failed(problem: str, *, trailing_missing: int = 0) -> FileCheck:
        return FileCheck(
            call=call, path=name, ok=False, problem=problem, trailing_missing=trailing_missing
        )

    try:
        with wave.open(name, "rb") as wav:
            params = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
            data = wav.readframes(wav.getnframes())
    except (OSError, wave.Error, EOFError) as exc:
        return failed(f"cannot read the file: {exc}")
    if params != (1, 2, codec.sample_rate):
        return failed(
            f"{params[0]} channel(s), {8 * params[1]}-bit, {params[2]} Hz; expected mono "
            f"16-bit {codec.sample_rate} Hz"
        )
    samples = np.frombuffer(data, dtype="<i2")
    size = audio.frame_samples
    if len(samples) % size:
        return failed(f"{len(samples)} samples is not a whole number of {size}-sample packets")
    frames = samples.reshape(-1, size)
    count = len(frames)
    if count == 0:
        return failed("the file holds no audio", trailing_missing=packets_sent)
    if count > packets_sent:
        return failed(f"the file holds {count} packets of audio, {packets_sent} were sent")
    first = frames[0].tobytes()
    lead = next(
        (
            k
            for k in range(min(packets_sent - count, MAX_LEAD_SEARCH) + 1)
            if codec.decoder().decode(audio.payload(audio_offset + k)) == first
        ),
        None,
    )
    if lead is None:
        return failed("the first frame of the file is none of the first packets sent")
    decoder = codec.decoder()
    audio_frames = silent = mismatched = 0
    first_bad = -1
    for k in range(count):
        frame = frames[k]
        if not frame.any():
            silent += 1  # a lost packet: the recorder wrote silence and decoded nothing
            continue
        if decoder.decode(audio.payload(audio_offset + lead + k)) == frame.tobytes():
            audio_frames += 1
        else:
            mismatched += 1
            if first_bad < 0:
                first_bad = k
    check = FileCheck(
        call=call,
        path=name,
        ok=True,
        audio_frames=audio_frames,
        silent_frames=silent,
        leading_missing=lead,
        trailing_missing=packets_sent - lead - count,
        mismatched=mismatched,
    )
    if mismatched:
        # A run of zeros reaching into the first bad frame: silence that is not a whole
        # number of packets long, after which everything is shifted.
        bad, before = frames[first_bad], frames[first_bad - 1] if first_bad else None
        shifted = not bad[:8].any() or (before is not None and not before[-8:].any())
        why = ", after a gap that is not a whole number of packets" if shifted else ""
        # A stateless codec (G.711) shows a gap left unfilled: the frame is a later packet.
        here = audio_offset + lead + first_bad
        ahead = next(
            (
                d
                for d in range(1, len(audio.payloads))
                if codec.decoder().decode(audio.payload(here + d)) == bad.tobytes()
            ),
            None,
        )
        if ahead is not None:
            why = (
                f": the audio jumps {ahead} packets ahead (mod {len(audio.payloads)}), "
                "a gap left unfilled"
            )
        return dataclasses.replace(
            check,
            ok=False,
            problem=f"{mismatched} of {count} frames differ from the audio sent (first at "
            f"{first_bad * PACKET_MS / 1000:.2f} s{why})",
        )
    if expected_audio_frames is not None and audio_frames != expected_audio_frames:
        return dataclasses.replace(
            check,
            ok=False,
            problem=f"the file has {audio_frames} packets of audio, the recorder counts "
            f"{expected_audio_frames} recorded",
        )
    return check


def sample_indices(population: Sequence[int], k: int) -> list[int]:
    """``k`` members spread evenly over ``population`` (deterministic), first and last in."""
    n = len(population)
    if k <= 0 or n == 0:
        return []
    if k >= n:
        return list(population)
    if k == 1:
        return [population[0]]
    return sorted({population[round(j * (n - 1) / (k - 1))] for j in range(k)})


# -- the report ------------------------------------------------------------------------------


def _percentile_ms(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values) * 1000, q))


def make_report(
    recorder: str,
    run: LoadRun,
    totals: RecorderTotals | None,
    checks: Sequence[FileCheck],
    problems: Sequence[str] = (),
) -> LoadReport:
    """Every figure of the run, and every reason to fail it, in one report."""
    options = run.options
    ok_calls = [c for c in run.calls if c.ok]
    sent = sum(c.packets_sent for c in run.calls)
    issues = list(problems)
    failed = [c for c in run.calls if not c.ok]
    if failed:
        reasons: dict[str, int] = {}
        for c in failed:
            reasons[str(c.error)] = reasons.get(str(c.error), 0) + 1
        worst = sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
        issues.append(
            f"{len(failed)} of {len(run.calls)} calls failed: "
            + "; ".join(f"{n} x {reason}" for reason, n in worst)
        )
    loss = late = None
    if totals is not None and sent:
        loss = 100 * (sent - totals.received) / sent
        late = 100 * totals.late / sent
        if loss > options.max_loss:
            issues.append(
                f"loss {loss:.4f}% ({sent - totals.received} of {sent} packets) is over "
                f"--max-loss {options.max_loss:g}%"
            )
        if totals.finalised < len(ok_calls):
            issues.append(f"only {totals.finalised} of {len(ok_calls)} recordings are finalised")
    elif totals is None:
        issues.append("no recorder counters: loss is unknown")
    bad = [c for c in checks if not c.ok]
    for check in bad[:5]:
        issues.append(f"verification failed for call {check.call}: {check.problem} ({check.path})")
    if len(bad) > 5:
        issues.append(f"... and {len(bad) - 5} more recordings failed verification")
    # The CPU window: every call streaming, else (a ramp longer than a call) first to last.
    window = "steady"
    start, end = run.marks.get("steady_start"), run.marks.get("steady_end")
    if start is None or end is None or end.at - start.at < 1.0:
        window = "streaming"
        start, end = run.marks.get("stream_start"), run.marks.get("stream_end")
    cpu = per_call = per_packet = own = None
    seconds = 0.0
    if start is not None and end is not None and end.at > start.at:
        seconds = end.at - start.at
        own = 100 * (end.own_cpu - start.own_cpu) / seconds
        if start.processes:
            cpu = 100 * (end.cpu - start.cpu) / seconds
            # Calls streaming on average over the window: all of them in the steady window.
            streaming = len(ok_calls) if window == "steady" else _mean_streaming(run, seconds)
            if streaming:
                per_call = cpu / streaming
                per_packet = 1e6 * (cpu / 100) / (streaming * PACKETS_PER_SECOND)
    rss_before = (
        run.baseline.rss_kib if run.baseline is not None and run.baseline.processes else None
    )
    rss_peak = max((s.rss_kib for s in run.samples if s.processes), default=None)
    per_call_rss = None
    if rss_before is not None and rss_peak is not None and ok_calls:
        per_call_rss = max(0, rss_peak - rss_before) / len(ok_calls)
    notes = []
    lag_p99 = _percentile_ms(run.lags, 99) or 0.0
    if lag_p99 > LATE_TICK_MS:
        notes.append(
            f"the generator ran late (tick lag p99 {lag_p99:,.0f} ms): packets went out in "
            "bursts and below the asked rate; the machine is overloaded, read the figures so"
        )
    if window == "streaming":
        notes.append(
            "no steady window (a call ended before the last began): CPU per call is "
            "over first packet to last, per call streaming on average"
        )
    starts = [c.start_seconds for c in run.calls if c.start_seconds is not None]
    stops = [c.stop_seconds for c in run.calls if c.stop_seconds is not None]
    return LoadReport(
        recorder=recorder,
        codec=get_codec(options.codec).name,
        calls=options.calls,
        calls_ok=len(ok_calls),
        seconds=options.seconds,
        ramp=options.ramp,
        packets_sent=sent,
        send_errors=sum(c.send_errors for c in run.calls),
        packets_received=totals.received if totals else None,
        packets_recorded=totals.recorded if totals else None,
        packets_lost=totals.lost if totals else None,
        packets_late=totals.late if totals else None,
        loss_percent=loss,
        late_percent=late,
        kernel_drops=run.kernel_drops,
        cpu_percent=cpu,
        cpu_window=window,
        cpu_window_seconds=seconds,
        cpu_per_call_percent=per_call,
        cpu_us_per_packet=per_packet,
        rss_before_kib=rss_before,
        rss_peak_kib=rss_peak,
        rss_per_call_kib=per_call_rss,
        processes=max((s.processes for s in run.samples), default=0),
        start_ms_median=_percentile_ms(starts, 50),
        start_ms_p99=_percentile_ms(starts, 99),
        stop_ms_median=_percentile_ms(stops, 50),
        stop_ms_p99=_percentile_ms(stops, 99),
        tick_lag_ms_p99=lag_p99,
        tick_lag_ms_max=1000 * max(run.lags, default=0.0),
        loadgen_cpu_percent=own,
        loadgen_nice=run.nice,
        verified=len(checks),
        verify_failed=len(bad),
        checks=list(checks),
        problems=issues,
        notes=notes,
    )


def _mean_streaming(run: LoadRun, seconds: float) -> float:
    return sum(c.packets_sent for c in run.calls) / PACKETS_PER_SECOND / seconds


# -- callrec: catalogue and files ----------------------------------------------------------------


def catalogue_totals(
    database_url: str, run: LoadRun
) -> tuple[RecorderTotals, dict[int, Any], list[str]]:
    """Sum the catalogue's counters over this run's calls (found by their devices)."""
    from callrec.catalog import STATUS_COMPLETE, Catalog

    by_device = {c.device: c.index for c in run.calls}
    problems: list[str] = []
    with Catalog(database_url) as catalog:
        rows = catalog.find(since=run.began - timedelta(seconds=60), limit=len(by_device) + 10_000)
    found: dict[int, Any] = {}
    for row in rows:
        index = by_device.get(row.device)
        if index is not None and row.session_id == run.calls[index].session_id:
            found[index] = row
    missing = [c.index for c in run.calls if c.ok and c.index not in found]
    if missing:
        problems.append(f"{len(missing)} calls have no catalogue row (e.g. call {missing[0]})")
    received = recorded = lost = late = finalised = 0
    for row in found.values():
        received += row.packets_received
        recorded += _recorded(row)
        lost += row.packets_lost
        late += row.packets_late
        finalised += row.status == STATUS_COMPLETE
    totals = RecorderTotals(
        received=received, recorded=recorded, lost=lost, late=late, finalised=finalised
    )
    return totals, found, problems


def _recorded(row: Any) -> int:
    """Packets whose audio is in the file: received, less what the stream core dropped."""
    dropped = (
        row.packets_late
        + row.packets_duplicate
        + row.packets_foreign
        + row.packets_malformed
        + row.packets_other
    )
    return int(row.packets_received - dropped)


def verify_catalogued(
    run: LoadRun, audio: AudioLoop, rows: Mapping[int, Any], recordings_dir: Path, k: int
) -> list[FileCheck]:
    """Verify ``k`` recordings spread over the calls that went well and have a row."""
    checks = []
    for index in sample_indices(sorted(i for i in rows if run.calls[i].ok), k):
        row = rows[index]
        checks.append(
            verify_recording(
                recordings_dir / row.path,
                audio,
                run.calls[index].packets_sent,
                audio_offset=run.calls[index].audio_offset,
                call=index,
                expected_audio_frames=_recorded(row),
            )
        )
    return checks


async def load_callrec(
    options: LoadOptions,
    target: ServerTarget,
    *,
    progress: Callable[[Progress], None] | None = None,
) -> LoadReport:
    """Load a running callrec server, then read its catalogue and verify its files."""
    audio = AudioLoop.for_options(options)
    run = await run_load(options, target, audio=audio, progress=progress)
    problems: list[str] = []
    totals: RecorderTotals | None = None
    checks: list[FileCheck] = []
    if target.database_url is None:
        problems.append("no catalogue URL: the recorder's counters cannot be read")
    else:
        try:
            totals, rows, found_problems = await asyncio.to_thread(
                catalogue_totals, target.database_url, run
            )
            problems += found_problems
        except CallrecError as exc:
            problems.append(f"cannot read the catalogue: {exc}")
            rows = {}
        if options.verify and rows:
            if target.recordings_dir is None:
                problems.append("no recordings directory: files not verified")
            else:
                checks = await asyncio.to_thread(
                    verify_catalogued, run, audio, rows, target.recordings_dir, options.verify
                )
    return make_report(target.name, run, totals, checks, problems)


# -- a server of our own ----------------------------------------------------------------------


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """``preexec_fn``: have the kernel end the child if we die (Linux), so no server or
    recorder outlives a killed load test."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 0)  # not the generator's raised priority


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class SpawnedServer:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    database_url: str
    recordings_dir: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def died(self) -> str | None:
        """Why the server is no longer running (with the end of its log), or None."""
        code = self.process.poll()
        if code is None:
            return None
        return f"the server exited during the run (status {code}); its log ends:\n{_tail(self.log)}"


def raise_descriptor_limit(needed: int) -> None:
    """Ask for every descriptor we may have; fail early when ``needed`` is out of reach."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed and (hard == resource.RLIM_INFINITY or hard > soft):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise LoadError(f"{needed} file descriptors needed, the limit is {soft} (ulimit -n)")


@contextlib.asynccontextmanager
async def spawn_server(
    *,
    calls: int,
    workdir: Path | None = None,
    server_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    start_timeout: float = 60.0,
    stop_timeout: float = 60.0,
) -> AsyncIterator[SpawnedServer]:
    """Run ``callrec serve`` as a child process on loopback with a catalogue and recordings
    directory of its own (web and SIP off); SIGTERM and wait for it on the way out."""
    owned = workdir is None
    root = Path(tempfile.mkdtemp(prefix="callrec-loadtest-")) if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    port = free_tcp_port()
    recordings = root / "recordings"
    url = f"sqlite:///{root / 'catalog.db'}"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
    child_env.update(
        CALLREC_WEB_ENABLED="false",
        CALLREC_SIP_ENABLED="false",
        CALLREC_CONTROL_HOST="127.0.0.1",
        CALLREC_CONTROL_PORT=str(port),
        CALLREC_MEDIA_HOST="127.0.0.1",
        CALLREC_MEDIA_PORT_MIN=str(SPAWN_MEDIA_PORT_MIN),
        CALLREC_MEDIA_PORT_MAX=str(SPAWN_MEDIA_PORT_MAX),
        CALLREC_RECORDINGS_DIR=str(recordings),
        CALLREC_DATABASE_URL=url,
        CALLREC_MAX_SESSIONS=str(max(5000, calls + 10)),
        CALLREC_MAX_CONNECTIONS=str(max(10000, calls + 100)),
    )
    child_env.update(env or {})
    log_path = root / "server.log"
    command = [sys.executable, "-m", "callrec", "serve", *server_args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )
    try:
        await _wait_listening(proc, port, start_timeout, log_path)
        yield SpawnedServer("127.0.0.1", port, proc, url, recordings, log_path)
    finally:
        await _terminate(proc, stop_timeout)
        if owned:
            import shutil

            shutil.rmtree(root, ignore_errors=True)


async def _wait_listening(
    proc: subprocess.Popen[bytes], port: int, timeout: float, log: Path
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if proc.poll() is not None:
            raise LoadError(f"the server exited with status {proc.returncode}:\n{_tail(log)}")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise LoadError(f"the server did not listen on port {port} within {timeout:g} s:\n{_tail(log)}")


async def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM (the server finalises what is open), then SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while proc.poll() is None and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if proc.poll() is None:
        logger.warning("server %d did not stop within %g s; killing it", proc.pid, timeout)
        proc.kill()
        proc.wait(10)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- the synchronous entry point ------------------------------------------------------------------


def run_loadtest(
    options: LoadOptions,
    *,
    server: tuple[str, int] | None = None,
    spawn: bool = False,
    server_pid: int | None = None,
    database_url: str | None = None,
    recordings_dir: Path | None = None,
    server_args: Sequence[str] = (),
    server_env: Mapping[str, str] | None = None,
    workdir: Path | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> LoadReport:
    """``callrec loadtest``: load a running server (``server``) or one spawned for the run.

    For a running server, its processes are found from the listening port (or ``server_pid``)
    and its catalogue and recordings come from ``database_url`` and ``recordings_dir``.
    """
    if spawn == (server is not None):
        raise LoadError("give a server HOST:PORT or --spawn, not both or neither")
    raise_descriptor_limit(2 * options.calls + 200)

    async def main() -> LoadReport:
        if server is not None:
            host, port = server
            pid = server_pid or listener_pid(port)
            target = ServerTarget(
                host=host,
                port=port,
                meter=ProcessMeter.tree(pid) if pid else None,
                database_url=database_url,
                recordings_dir=recordings_dir,
            )
            report = await load_callrec(options, target, progress=progress)
            if pid is None:
                report.problems.append(
                    f"no process listens on port {port} here: no CPU and memory figures"
                )
            return report
        async with spawn_server(
            calls=options.calls, workdir=workdir, server_args=server_args, env=server_env
        ) as spawned:
            target = ServerTarget(
                host=spawned.host,
                port=spawned.port,
                meter=ProcessMeter.tree(spawned.pid),
                database_url=spawned.database_url,
                recordings_dir=spawned.recordings_dir,
            )
            report = await load_callrec(options, target, progress=progress)
            death = spawned.died()
            if death:
                report.problems.append(death)
            if not report.ok and workdir is None:
                # The run's directory goes away with the server: keep its log for a post-mortem.
                kept = Path(tempfile.gettempdir()) / f"callrec-loadtest-{os.getpid()}.log"
                with contextlib.suppress(OSError):
                    kept.write_bytes(spawned.log.read_bytes())
                    report.notes.append(f"server log kept: {kept}")
            return report

    report: LoadReport = run_async(main())
    return report


def run_async(coro: Any) -> Any:
    """Run ``coro`` on uvloop when it is there (it is a dependency on POSIX)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
