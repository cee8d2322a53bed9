"""The load generator: many simulated phones recording at once, one process's share.

Each simulated phone does what a phone set to "record type: Network" does: a TCP control
connection, ``RecordStartRequest`` (no terminator, as phones send it), 20 ms RTP at real-time
pace to the port of the answer, ``RecordStopRequest``. The generator is built not to be the
bottleneck of the measurement:

* the audio is a loop encoded once per run (:class:`~callrec.sim.audioloop.AudioLoop`); a
  process keeps one ``bytearray`` packet for all its calls: each tick copies the payload and
  patches sequence number and timestamp into it once, then per call only the SSRC, with
  :func:`struct.pack_into`, before each send: no per-packet objects;
* one timer drives every call: a tick every 20 ms on an absolute schedule (a late tick sends
  at once and the schedule does not drift), each tick a tight loop of ``sock.send`` over the
  calls, one connected UDP socket per call as a real phone has;
* calls start on a ramp (calls per second), and each stops after its own ``seconds``.

While it runs, the first process samples the recorder's processes in ``/proc`` (CPU time and
RSS, :mod:`callrec.sim.meters`), and the kernel's per-socket drop counters of the recorder's
UDP ports give a live "lost so far". :mod:`callrec.sim.senders` spreads a run over processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from callrec.control.connection import START_REQUEST, STOP_REQUEST
from callrec.control.message import ControlMessage
from callrec.exceptions import ControlProtocolError
from callrec.sim.audioloop import AudioLoop
from callrec.sim.loadrun import (
    TICK,
    CallResult,
    LoadError,
    LoadOptions,
    MediaTarget,
    Progress,
    ServerTarget,
)
from callrec.sim.meters import Sample, udp_socket_stats

#: An unterminated answer is whole once nothing more came for this long (as the phone reads).
ANSWER_IDLE: Final = 0.05
_ANSWER_TERMINATOR: Final = re.compile(rb"\r\n|\n|\0")
_MAX_ANSWER: Final = 8192
#: How often the recorder's processes and sockets are read while the load runs.
SAMPLE_INTERVAL: Final = 0.5
#: Reading /proc/net/udp costs a few ms with thousands of sockets: every this many samples.
UDP_STATS_EVERY: Final = 4

#: RTP header bytes 2-7: sequence number and timestamp, patched before every send.
_SEQ_TS: Final = struct.Struct("!HI")
#: RTP header bytes 8-11: the SSRC, patched per call.
_SSRC: Final = struct.Struct("!I")
_HEADER: Final = struct.Struct("!BBHII")
_RTP_V2: Final = 0x80
_MARKER: Final = 0x80


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


def call_ssrc(options: LoadOptions, index: int) -> int:
    """The SSRC call ``index`` sends with: a recorder that also gets other traffic on its
    port (a shared machine) tells the call's own packets by it."""
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
            self._joining.append(_Stream(call, sock, call_ssrc(self.options, i), control))
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
                call.stop_sent_at = time.time()
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
