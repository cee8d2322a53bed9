"""Catalogue faults measured from outside: a real ``callrec serve`` whose catalogue fails
(issue 12, "Record first").

Each scenario runs ``callrec serve`` as a subprocess (loopback, free ports, the web on for
``/api/v1/health``, its default settings otherwise), injects one fault, and while it lasts
starts phone calls at a steady rate (each 1 s of PCMA sent in real time, then stopped) and
asks ``/api/v1/health`` every 0.5 s. Then it ends the fault and reads the catalogue directly
(:class:`callrec.catalog.Catalog`) until every answered call's row is ``complete``. Per run it
prints one table: calls answered ``success``, start and stop answer times, ``/health``'s
slowest answer and the codes it gave during the fault, how long after the fault's end the
catalogue was whole, duplicate rows and rows left ``recording``, and every WAV file checked
against what was sent (frame count, and every sample against the decode of the payloads).

Scenarios (``--only KEY``, repeatable): ``pg-stopped`` (PostgreSQL stopped 28 s),
``pg-hung`` (SIGSTOP 36 s), ``pg-down-at-start`` (PostgreSQL down when serve starts, started
20 s later), ``sqlite-removed`` (the SQLite file's directory deleted, then serve restarted),
``sqlite-read-only`` (its tmpfs remounted read-only before serve starts, read-write 20 s
later), ``disk-full`` (recordings and SQLite on one full tmpfs for 10 s) and
``main-killed`` (``--workers 2``, the main process killed with SIGKILL, calls over the next
20 s). PostgreSQL is a throwaway cluster of this process (tests/support/pgcluster.py: a port
of its own, never the shared server on 5432); the tmpfs scenarios need root and are skipped
otherwise. Every run is printed and saved (JSON under --out), not only the best one.

    .venv/bin/python benchmarks/catalogue_faults.py                 # every scenario, once
    .venv/bin/python benchmarks/catalogue_faults.py --runs 3
    .venv/bin/python benchmarks/catalogue_faults.py --only pg-hung --only main-killed
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import wave
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from callrec.catalog import Catalog, RecordingInfo
from callrec.codecs import get_codec
from callrec.exceptions import CallrecError
from callrec.sim.phone import PhoneCall, PhoneError, build_packets

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.support: the throwaway PostgreSQL cluster, ports

from tests.support.net import free_tcp_port, tcp_listeners  # noqa: E402
from tests.support.pgcluster import PgCluster, unavailable  # noqa: E402
from tests.support.serve import spawn_serve  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"

CODEC = "PCMA"
RATE = 8000
PACKET_MS = 20
#: Seconds of audio per call (sent in real time, as a phone does).
CALL_SECONDS = 1.0
#: Seconds a phone waits for an answer (to connect, to a start, to a stop).
ANSWER_TIMEOUT = 10.0
#: /health is asked every HEALTH_EVERY s, and given HEALTH_TIMEOUT s to answer.
HEALTH_EVERY = 0.5
HEALTH_TIMEOUT = 5.0
#: Seconds a server may take to serve, and the catalogue to be whole after a fault.
START_TIMEOUT = 60.0
CATCH_UP_TIMEOUT = 90.0
#: After the catalogue is whole, seconds more to wait for /health to say 200.
HEALTH_OK_TIMEOUT = 20.0
#: Seconds a SIGTERMed server (or orphaned worker) may take before it is killed.
STOP_TIMEOUT = 40.0
#: The tmpfs of the read-only and full-disk scenarios.
TMPFS_BYTES = 16 << 20
SMALL_TMPFS_BYTES = 8 << 20
#: Bytes left free when the disk is "full": room for a call or two, then every write fails.
DISK_FULL_LEAVE = 64 << 10


# -- what is measured ------------------------------------------------------------------------


@dataclass
class CallResult:
    session_id: str
    #: Seconds after the fault window began that the call was started.
    started_at: float
    #: ``success``, ``failed:<reason>``, ``no answer`` (none within ANSWER_TIMEOUT) or the
    #: phone's word for a connection that failed (``connection_lost``...).
    start: str
    start_s: float | None
    stop: str | None = None
    stop_s: float | None = None
    media_port: int | None = None
    packets_sent: int = 0
    frames_sent: int = 0


@dataclass
class HealthSample:
    #: Seconds after the fault window began.
    at: float
    seconds: float
    #: HTTP status, or ``timeout`` / ``refused`` / ``error``.
    code: str
    #: ``catalogue.state`` and ``journal.backlog`` of the answer.
    catalogue: str | None
    backlog: int | None = None


@dataclass
class Outcome:
    key: str
    fault: str
    run: int = 0
    window: float = 0.0
    before: list[CallResult] = field(default_factory=list)
    calls: list[CallResult] = field(default_factory=list)
    #: /health during the fault, and after it until it said 200 (or gave up).
    health: list[HealthSample] = field(default_factory=list)
    health_after: list[HealthSample] = field(default_factory=list)
    health_ok_after: float | None = None
    #: Seconds from the fault's end until every answered call's row was ``complete`` and no
    #: row ``recording``; None when that did not happen within CATCH_UP_TIMEOUT.
    complete_after: float | None = None
    rows: int = 0
    duplicates: int = 0
    stuck: int = 0
    #: Answered calls whose row is missing or not ``complete`` ("sid: status/reason"), or,
    #: for a call whose stop was answered success, not ``phone_stop`` with every packet.
    not_complete: list[str] = field(default_factory=list)
    #: Rows of calls whose start was not answered success.
    extra_rows: list[str] = field(default_factory=list)
    wav_ok: int = 0
    #: Of those, cut short by a full disk (``disk_full``): the beginning of what was sent.
    wav_cut_short: int = 0
    wav_bad: list[str] = field(default_factory=list)
    files_without_row: list[str] = field(default_factory=list)
    #: ERROR lines, tracebacks and "catalogue writes work again" lines in the server's logs.
    error_lines: int = 0
    tracebacks: int = 0
    works_again: int = 0
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None


# -- the audio of every call ---------------------------------------------------------------


@dataclass(frozen=True)
class Audio:
    pcm: npt.NDArray[np.int16]
    #: What the WAV must hold: the decode of the payloads sent.
    reference: npt.NDArray[np.int16]

    @classmethod
    def make(cls, seed: int) -> Audio:
        rng = np.random.default_rng(seed)
        t = np.arange(int(RATE * CALL_SECONDS)) / RATE
        signal_ = 6000 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 1500, len(t))
        pcm = np.clip(np.rint(signal_), -32768, 32767).astype(np.int16)
        codec = get_codec(CODEC)
        payloads = b"".join(
            p.payload for p in build_packets(pcm, codec, ssrc=0, packet_ms=PACKET_MS)
        )
        reference = np.frombuffer(codec.decoder().decode(payloads), "<i2").copy()
        return cls(pcm, reference)

    def packets(self, ssrc: int) -> list[bytes]:
        return [
            p.serialize()
            for p in build_packets(self.pcm, get_codec(CODEC), ssrc=ssrc, packet_ms=PACKET_MS)
        ]


async def one_call(port: int, sid: str, audio: Audio, ssrc: int, origin: float) -> CallResult:
    """A whole call: start, 1 s of audio in real time, stop; every answer timed."""
    call = PhoneCall(
        "127.0.0.1", port, session_id=sid, codec=CODEC, answer_timeout=ANSWER_TIMEOUT, ssrc=ssrc
    )
    began = time.monotonic()
    result = CallResult(sid, began - origin, "?", None)
    try:
        try:
            answer = await call.start()
        except PhoneError as exc:
            result.start = "no answer" if exc.reason == "timeout" else exc.reason
            return result
        result.start_s = time.monotonic() - began
        if answer.get("result") != "success":
            result.start = f"failed:{answer.get('reason') or '?'}"
            return result
        result.start = "success"
        result.media_port = call.media_port
        packets = audio.packets(ssrc)
        try:
            await call.send_packets(packets, realtime=True, packet_ms=PACKET_MS)
        except PhoneError as exc:
            result.stop = f"media: {exc.reason}"
            return result
        result.packets_sent = call.packets_sent
        result.frames_sent = call.packets_sent * RATE * PACKET_MS // 1000
        stopping = time.monotonic()
        try:
            stopped = await call.stop()
        except PhoneError as exc:
            result.stop = "no answer" if exc.reason == "timeout" else exc.reason
            return result
        result.stop_s = time.monotonic() - stopping
        ok = stopped.get("result") == "success"
        result.stop = "success" if ok else f"failed:{stopped.get('reason') or '?'}"
        return result
    finally:
        await call.close()


# -- /health -------------------------------------------------------------------------------


def ask_health(port: int) -> tuple[float, str, str | None, int | None]:
    """(seconds, code, catalogue state, journal backlog) of one ``GET /api/v1/health``."""
    began = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HEALTH_TIMEOUT)
    state: str | None = None
    backlog: int | None = None
    try:
        conn.request("GET", "/api/v1/health")
        response = conn.getresponse()
        body = response.read()
        code = str(response.status)
        with contextlib.suppress(ValueError, LookupError, TypeError):
            answer = json.loads(body)
            state = answer["catalogue"]["state"]
            backlog = answer["journal"]["backlog"]
    except TimeoutError:
        code = "timeout"
    except ConnectionRefusedError:
        code = "refused"
    except (OSError, http.client.HTTPException):
        code = "error"
    finally:
        conn.close()
    return time.monotonic() - began, code, state, backlog


class HealthPoller:
    """Asks /health every HEALTH_EVERY s (one request at a time) until stopped."""

    def __init__(self, port: int, origin: float) -> None:
        self.port = port
        self.origin = origin
        self.samples: list[HealthSample] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            at = time.monotonic()
            seconds, code, state, backlog = await asyncio.to_thread(ask_health, self.port)
            self.samples.append(HealthSample(at - self.origin, seconds, code, state, backlog))
            await asyncio.sleep(max(0.0, at + HEALTH_EVERY - time.monotonic()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# -- the catalogue, read directly ----------------------------------------------------------


def read_rows(url: str) -> list[RecordingInfo] | str:
    try:
        with Catalog(url) as catalog:
            return catalog.find(limit=100_000)
    except CallrecError as exc:
        return str(exc)


def whole(rows: list[RecordingInfo], expected: set[str]) -> bool:
    """Every expected call has a ``complete`` row, and no row is left ``recording``."""
    complete = {r.session_id for r in rows if r.status == "complete"}
    return expected <= complete and not any(r.status == "recording" for r in rows)


async def wait_whole(
    url: str, expected: set[str], since: float, timeout: float = CATCH_UP_TIMEOUT
) -> tuple[float | None, list[RecordingInfo] | None, str | None]:
    """Poll the catalogue until :func:`whole`: (seconds after ``since``, or None on a time
    out; the last rows read; the last error)."""
    deadline = since + timeout
    rows: list[RecordingInfo] | None = None
    error: str | None = None
    while True:
        read = await asyncio.to_thread(read_rows, url)
        if isinstance(read, str):
            error = read
        else:
            rows = read
            if whole(rows, expected):
                return time.monotonic() - since, rows, None
        if time.monotonic() > deadline:
            return None, rows, error
        await asyncio.sleep(0.25)


def wav_problem(
    path: Path, frames: int, reference: npt.NDArray[np.int16], *, cut_short: bool = False
) -> str | None:
    """What is wrong with a call's WAV (None: it holds exactly what was sent, or with
    ``cut_short`` the beginning of it)."""
    try:
        with wave.open(str(path), "rb") as w:
            got = w.getnframes()
            shape = (w.getnchannels(), w.getsampwidth(), w.getframerate())
            data = np.frombuffer(w.readframes(got), "<i2")
    except (OSError, wave.Error, EOFError) as exc:
        return f"unreadable ({exc})"
    if shape != (1, 2, RATE):
        return f"format {shape}"
    if cut_short and got <= frames:
        return None if np.array_equal(data, reference[:got]) else "samples differ"
    if got != frames:
        return f"{got} frames, {frames} sent"
    if frames == len(reference) and not np.array_equal(data, reference):
        return "samples differ from what was sent"
    return None


def wav_files(root: Path) -> Iterator[str]:
    for path in root.rglob("*.wav"):
        rel = path.relative_to(root)
        if not rel.parts[0].startswith("."):
            yield rel.as_posix()


def analyse(out: Outcome, rows: list[RecordingInfo], root: Path, audio: Audio) -> None:
    calls = {c.session_id: c for c in out.before + out.calls}
    answered = {sid for sid, c in calls.items() if c.start == "success"}
    out.rows = len(rows)
    per_session = Counter(r.session_id for r in rows)
    out.duplicates = sum(n - 1 for n in per_session.values() if n > 1)
    out.stuck = sum(r.status == "recording" for r in rows)
    by_session = {r.session_id: r for r in rows}
    for sid in sorted(answered):
        row = by_session.get(sid)
        if row is None:
            out.not_complete.append(f"{sid}: no row")
            continue
        call = calls[sid]
        if row.status != "complete":
            out.not_complete.append(f"{sid}: {row.status}/{row.stop_reason}")
        elif (
            call.stop == "success"
            and row.stop_reason != "disk_full"  # cut short: the WAV check below says how
            and (row.stop_reason != "phone_stop" or row.packets_received != call.packets_sent)
        ):
            out.not_complete.append(
                f"{sid}: {row.stop_reason}, {row.packets_received} of {call.packets_sent} "
                "packets counted"
            )
        cut_short = row.stop_reason == "disk_full"
        problem = wav_problem(
            root / row.path, calls[sid].frames_sent, audio.reference, cut_short=cut_short
        )
        if problem is None:
            out.wav_ok += 1
            out.wav_cut_short += cut_short
        else:
            out.wav_bad.append(f"{sid}: {problem} ({row.status}/{row.stop_reason})")
    out.extra_rows = [
        f"{r.session_id}: {r.status}/{r.stop_reason}" for r in rows if r.session_id not in answered
    ]
    paths = {r.path for r in rows}
    out.files_without_row = sorted(set(wav_files(root)) - paths)


# -- callrec serve ---------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _children(parent: int, marker: bytes = b"spawn_main") -> list[int]:
    """Pids of ``parent``'s children whose command line holds ``marker`` (media workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == parent and marker in cmdline:
            found.append(int(entry.name))
    return found


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


class Server:
    """``callrec serve`` on loopback (free control and web ports; its settings otherwise the
    defaults), restartable with the same settings."""

    def __init__(self, tmp: Path, *, workers: int = 1, **settings: object) -> None:
        self.tmp = tmp
        self.workers = workers
        self.control_port = free_tcp_port()
        self.web_port = free_tcp_port()
        self.settings: dict[str, object] = dict(
            control_port=self.control_port,
            web_enabled=True,
            web_host="127.0.0.1",
            web_port=self.web_port,
            **settings,
        )
        self.root = Path(str(self.settings.get("recordings_dir", tmp / "recordings"))).resolve()
        self.url = str(self.settings.get("database_url", f"sqlite:///{tmp / 'catalog.db'}"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []
        self.spawned_at = 0.0

    def spawn(self) -> None:
        log = self.tmp / f"serve-{len(self.logs)}.log"
        self.logs.append(log)
        args = ("--workers", str(self.workers)) if self.workers > 1 else ()
        self.spawned_at = time.monotonic()
        self.proc = spawn_serve(self.tmp, *args, log=log, **self.settings)

    def _serving(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"callrec serve exited with {self.proc.returncode}:\n{self.log_tail()}"
            )
        if self.workers > 1:
            if len(tcp_listeners(self.control_port)) < self.workers:
                return False
        elif not _accepts(self.control_port):
            return False
        return ask_health(self.web_port)[1] not in ("refused", "error", "timeout")

    async def serving(self, timeout: float = START_TIMEOUT) -> float:
        """Wait until the control port and /health answer; seconds since the spawn."""
        while not await asyncio.to_thread(self._serving):
            if time.monotonic() - self.spawned_at > timeout:
                raise RuntimeError(f"callrec serve not serving after {timeout:g} s")
            await asyncio.sleep(0.05)
        return time.monotonic() - self.spawned_at

    async def start(self) -> float:
        self.spawn()
        return await self.serving()

    async def terminate(self) -> tuple[int | None, float]:
        """SIGTERM and wait (killed after STOP_TIMEOUT): (exit status, seconds)."""
        proc = self.proc
        began = time.monotonic()
        if proc is None:
            return None, 0.0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        return proc.returncode, time.monotonic() - began

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for pid in _children(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait()

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def count_log(self, out: Outcome) -> None:
        text = self.log_text()
        out.error_lines = sum(" ERROR " in line for line in text.splitlines())
        out.tracebacks = text.count("Traceback (most recent call last)")
        out.works_again = text.count("catalogue writes work again")


# -- one fault window ------------------------------------------------------------------------


FaultStep = Callable[[], Awaitable[float | None]]


@dataclass
class Bench:
    tmp: Path
    audio: Audio
    rng: random.Random
    calls: int
    scale: float

    def ssrc(self) -> int:
        return self.rng.getrandbits(32)

    async def calls_before(self, server: Server, out: Outcome, count: int) -> None:
        """Calls with the catalogue healthy, then waited for until catalogued."""
        origin = time.monotonic()
        for n in range(count):
            sid = f"{out.key}-before{n}"
            out.before.append(
                await one_call(server.control_port, sid, self.audio, self.ssrc(), origin)
            )
        answered = {c.session_id for c in out.before if c.start == "success"}
        took, _, error = await wait_whole(server.url, answered, time.monotonic(), 30)
        if took is None:
            out.notes.append(f"calls before the fault not catalogued within 30 s ({error})")

    async def fault(
        self,
        server: Server,
        out: Outcome,
        *,
        seconds: float,
        begin: FaultStep,
        end: FaultStep,
        end_after_calls: bool = False,
        health_recovers: bool = True,
    ) -> None:
        """``begin``, calls started at a steady rate over ``seconds`` with /health polled,
        ``end`` (after the calls have ended if ``end_after_calls``), then the catalogue waited
        for until whole. ``end`` may return the moment the fault ended (else: when it
        returns)."""
        seconds *= self.scale
        out.window = seconds
        await begin()
        origin = time.monotonic()
        poller = HealthPoller(server.web_port, origin)
        poller.start()
        step = seconds / self.calls
        ssrcs = [self.ssrc() for _ in range(self.calls)]

        async def schedule() -> list[CallResult]:
            tasks = []
            for n in range(self.calls):
                await asyncio.sleep(max(0.0, origin + n * step - time.monotonic()))
                sid = f"{out.key}-{n:02d}"
                tasks.append(
                    asyncio.create_task(
                        one_call(server.control_port, sid, self.audio, ssrcs[n], origin)
                    )
                )
            return list(await asyncio.gather(*tasks))

        calls = asyncio.create_task(schedule())
        try:
            await asyncio.sleep(max(0.0, origin + seconds - time.monotonic()))
            if end_after_calls:
                out.calls = await calls
            ending = time.monotonic()
            ended = await end() or time.monotonic()
            out.calls = await calls
            answered = {c.session_id for c in out.before + out.calls if c.start == "success"}
            out.complete_after, rows, error = await wait_whole(server.url, answered, ended)
            if out.complete_after is None:
                out.notes.append(f"catalogue not whole after {CATCH_UP_TIMEOUT:g} s ({error})")
            if health_recovers:
                deadline = time.monotonic() + HEALTH_OK_TIMEOUT
                while time.monotonic() < deadline and not any(
                    s.code == "200" and s.at + origin > ended for s in poller.samples
                ):
                    await asyncio.sleep(0.1)
        finally:
            await poller.stop()
            if not calls.done():
                calls.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await calls
        # What /health said while the fault lasted; once it is being ended (a restart: the
        # old server shutting down), what it says belongs to the recovery.
        at_end = ended - origin
        out.health = [s for s in poller.samples if s.at < ending - origin]
        out.health_after = [s for s in poller.samples if s.at >= at_end]
        ok = [s.at + s.seconds - at_end for s in out.health_after if s.code == "200"]
        out.health_ok_after = max(0.0, ok[0]) if ok else None
        early = [s for s in out.health_after if s.code == "200" and s.backlog]
        if early:
            out.notes.append(
                f"/health said 200 with catalogue writes still waiting in the journal "
                f"{len(early)} times (backlog up to {max(s.backlog or 0 for s in early)})"
            )
        if rows is not None:
            analyse(out, rows, server.root, self.audio)


# -- the scenarios ---------------------------------------------------------------------------


async def _nothing() -> None:
    return None


@contextlib.asynccontextmanager
async def pg_cluster() -> AsyncIterator[PgCluster]:
    cluster = await asyncio.to_thread(PgCluster)
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.cleanup)


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def _no_tmpfs() -> str | None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "mounting a tmpfs needs root"
    return None


async def pg_stopped(b: Bench, out: Outcome) -> None:
    async with pg_cluster() as pg:
        await asyncio.to_thread(pg.start)
        server = Server(b.tmp, database_url=pg.url)
        try:
            await server.start()
            await b.calls_before(server, out, 2)

            async def begin() -> None:
                await asyncio.to_thread(pg.stop, "fast")

            async def end() -> None:
                await asyncio.to_thread(pg.start)

            await b.fault(server, out, seconds=28, begin=begin, end=end)
            rc, took = await server.terminate()
            out.notes.append(f"SIGTERM: exit {rc} after {took:.1f} s")
        finally:
            server.kill()
            server.count_log(out)


async def pg_hung(b: Bench, out: Outcome) -> None:
    async with pg_cluster() as pg:
        await asyncio.to_thread(pg.start)
        server = Server(b.tmp, database_url=pg.url)
        try:
            await server.start()
            await b.calls_before(server, out, 2)

            async def begin() -> None:
                await asyncio.to_thread(pg.pause)

            async def end() -> None:
                await asyncio.to_thread(pg.resume)

            await b.fault(server, out, seconds=36, begin=begin, end=end)
            rc, took = await server.terminate()
            out.notes.append(f"SIGTERM: exit {rc} after {took:.1f} s")
        finally:
            server.kill()
            server.count_log(out)


async def pg_down_at_start(b: Bench, out: Outcome) -> None:
    async with pg_cluster() as pg:  # made, never started: down
        server = Server(b.tmp, database_url=pg.url)
        try:
            took = await server.start()
            out.notes.append(f"serve answered calls and /health {took:.1f} s after its start")

            async def end() -> None:
                await asyncio.to_thread(pg.start)

            await b.fault(server, out, seconds=20, begin=_nothing, end=end)
            out.notes.append(
                f"PostgreSQL was down {took + out.window:.1f} s (serve's start + the window)"
            )
            rc, took = await server.terminate()
            out.notes.append(f"SIGTERM: exit {rc} after {took:.1f} s")
        finally:
            server.kill()
            server.count_log(out)


async def sqlite_removed(b: Bench, out: Outcome) -> None:
    db_dir = b.tmp / "db"
    server = Server(b.tmp, database_url=f"sqlite:///{db_dir / 'catalog.db'}")
    try:
        await server.start()
        await b.calls_before(server, out, 5)

        async def begin() -> None:
            shutil.rmtree(db_dir)

        async def end() -> float:
            rc, took = await server.terminate()
            out.notes.append(f"SIGTERM with the directory gone: exit {rc} after {took:.1f} s")
            server.spawn()
            began = server.spawned_at
            took = await server.serving()
            out.notes.append(f"restarted serve answered {took:.1f} s after its start")
            return began

        await b.fault(server, out, seconds=20, begin=begin, end=end, end_after_calls=True)
        rc, took = await server.terminate()
        out.notes.append(f"SIGTERM: exit {rc} after {took:.1f} s")
        restarted = server.logs[-1].read_text(errors="replace")
        for said in ("rebuilding it from their sidecars", "replayed"):
            out.notes.append(f"restarted serve's log says {said!r}: {said in restarted}")
    finally:
        server.kill()
        server.count_log(out)


async def sqlite_read_only(b: Bench, out: Outcome) -> None:
    with tmpfs(b.tmp / "db", TMPFS_BYTES) as db_dir:
        url = f"sqlite:///{db_dir / 'catalog.db'}"
        with Catalog(url) as catalog:
            catalog.migrate()
        _remount(db_dir, "ro")  # before serve starts: a restored backup, a wrong mount option
        server = Server(b.tmp, database_url=url)
        try:
            took = await server.start()
            out.notes.append(f"serve answered calls and /health {took:.1f} s after its start")

            async def end() -> None:
                await asyncio.to_thread(_remount, db_dir, "rw")

            await b.fault(server, out, seconds=20, begin=_nothing, end=end)
            rc, took = await server.terminate()
            out.notes.append(f"SIGTERM: exit {rc} after {took:.1f} s")
        finally:
            server.kill()
            server.count_log(out)
            with contextlib.suppress(subprocess.CalledProcessError):
                _remount(db_dir, "rw")


def _fill(path: Path, leave: int) -> int:
    """Write ``path`` until the filesystem is full, then give ``leave`` bytes back (a few
    calls' worth: calls are taken, then cut short); bytes written."""
    written = 0
    chunk = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            try:
                written += os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]  # the last few blocks too
        written = max(0, written - leave)
        os.ftruncate(fd, written)
    finally:
        os.close(fd)
    return written


async def disk_full(b: Bench, out: Outcome) -> None:
    with tmpfs(b.tmp / "small", SMALL_TMPFS_BYTES) as small:
        server = Server(
            b.tmp,
            recordings_dir=small / "recordings",
            database_url=f"sqlite:///{small / 'catalog.db'}",
            disk_reserve_bytes=0,
            disk_reserve_percent=0,
        )
        filler = small / "filler"
        try:
            await server.start()
            await b.calls_before(server, out, 2)

            async def begin() -> None:
                await asyncio.to_thread(_fill, filler, DISK_FULL_LEAVE)

            async def end() -> None:
                filler.unlink()

            await b.fault(server, out, seconds=10, begin=begin, end=end)
            rc, took = await server.terminate()
            out.notes.append(f"SIGTERM: exit {rc} after {took:.1f} s")
        finally:
            filler.unlink(missing_ok=True)
            server.kill()
            server.count_log(out)


def _free_udp_range(rng: random.Random, count: int) -> int:
    """The first of ``count`` consecutive UDP ports on loopback, all free a moment ago."""
    for _ in range(50):
        low = rng.randrange(30000, 60000 - count, 100)
        try:
            for port in range(low, low + count):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return low
    raise RuntimeError(f"no {count} free consecutive UDP ports")


async def main_killed(b: Bench, out: Outcome) -> None:
    low = _free_udp_range(b.rng, 40)
    server = Server(b.tmp, workers=2, media_port_min=low, media_port_max=low + 39)
    worker_low = low + 20  # port_slices(low, low + 39, 2): the worker has the upper half
    workers: list[int] = []
    try:
        await server.start()
        assert server.proc is not None
        workers = _children(server.proc.pid)
        out.notes.append(f"media workers: {len(workers)}")
        await b.calls_before(server, out, 6)
        on_worker = sum(c.media_port is not None and c.media_port >= worker_low for c in out.before)
        out.notes.append(
            f"before the kill, {on_worker} of {len(out.before)} calls went to the worker"
        )
        main = server.proc

        async def begin() -> None:
            main.send_signal(signal.SIGKILL)
            await asyncio.to_thread(main.wait, 10)
            listeners = len(tcp_listeners(server.control_port))
            out.notes.append(f"listeners on the control port after the kill: {listeners}")

        await b.fault(server, out, seconds=20, begin=begin, end=_nothing, health_recovers=False)
        on_worker = sum(c.media_port is not None and c.media_port >= worker_low for c in out.calls)
        out.notes.append(f"after the kill, {on_worker} answered calls were on the worker")
        for pid in workers:
            began = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            while _alive(pid) and time.monotonic() - began < STOP_TIMEOUT:
                await asyncio.sleep(0.05)
            if _alive(pid):
                out.notes.append(f"orphaned worker alive {STOP_TIMEOUT:g} s after SIGTERM")
            else:
                out.notes.append(f"orphaned worker: SIGTERM took {time.monotonic() - began:.1f} s")
    finally:
        for pid in workers:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        server.kill()
        server.count_log(out)


@dataclass(frozen=True)
class Scenario:
    key: str
    fault: str
    run: Callable[[Bench, Outcome], Awaitable[None]]
    unavailable: Callable[[], str | None]


SCENARIOS = [
    Scenario("pg-stopped", "PostgreSQL stopped 28 s", pg_stopped, unavailable),
    Scenario("pg-hung", "PostgreSQL hung (SIGSTOP) 36 s", pg_hung, unavailable),
    Scenario(
        "pg-down-at-start",
        "PostgreSQL down when serve starts, started 20 s later",
        pg_down_at_start,
        unavailable,
    ),
    Scenario(
        "sqlite-removed",
        "SQLite file's directory deleted, serve restarted 20 s later",
        sqlite_removed,
        lambda: None,
    ),
    Scenario(
        "sqlite-read-only",
        "SQLite read-only (tmpfs remounted) before serve starts, rw 20 s later",
        sqlite_read_only,
        _no_tmpfs,
    ),
    Scenario(
        "disk-full",
        "disk full 10 s, SQLite on the same filesystem",
        disk_full,
        _no_tmpfs,
    ),
    Scenario(
        "main-killed",
        "main process of --workers 2 killed (SIGKILL), calls over the next 20 s",
        main_killed,
        lambda: None,
    ),
]


# -- running and printing ------------------------------------------------------------------


async def run_scenario(scenario: Scenario, run: int, args: argparse.Namespace) -> Outcome:
    out = Outcome(scenario.key, scenario.fault)
    why = scenario.unavailable()
    if why:
        out.skipped = why
        return out
    index = [s.key for s in SCENARIOS].index(scenario.key)
    tmp = Path(tempfile.mkdtemp(prefix=f"callrec-faults-{scenario.key}-"))
    bench = Bench(
        tmp=tmp,
        audio=Audio.make(args.seed),
        rng=random.Random(args.seed * 1000 + run * 100 + index),
        calls=args.calls,
        scale=args.scale,
    )
    try:
        await scenario.run(bench, out)
    except Exception as exc:
        out.error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        if args.keep:
            out.notes.append(f"files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _median_max(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.3f} / {max(values):.3f} s"


def _counts(words: list[str]) -> str:
    return ", ".join(f"{w} x{n}" for w, n in Counter(words).most_common())


def row_of(out: Outcome) -> list[str]:
    if out.skipped:
        return [out.fault, f"skipped: {out.skipped}", "", "", "", "", "", ""]
    calls = out.calls
    success = sum(c.start == "success" for c in calls)
    others = [c.start for c in calls if c.start != "success"]
    answered = f"{success}/{len(calls)}" + (f" ({_counts(others)})" if others else "")
    stops = [c.stop for c in calls if c.start == "success" and c.stop != "success"]
    if stops:
        answered += f"; stops not success: {_counts([s or '?' for s in stops])}"
    health = "-"
    if out.health:
        codes = [s.code + (f" {s.catalogue}" if s.catalogue else "") for s in out.health]
        health = f"{max(s.seconds for s in out.health):.3f} s; {_counts(codes)}"
    if out.complete_after is not None:
        complete = f"{out.complete_after:.1f} s"
    else:
        complete = f"not within {CATCH_UP_TIMEOUT:g} s"
    if out.health_ok_after is not None:
        complete += f" (/health 200 after {out.health_ok_after:.1f} s)"
    checked = out.wav_ok + len(out.wav_bad)
    wav = f"{out.wav_ok}/{checked}"
    if out.wav_cut_short:
        wav += f" ({out.wav_cut_short} cut short by disk_full, the beginning of what was sent)"
    if out.error:
        complete = f"ERROR {out.error}"
    return [
        out.fault,
        answered,
        _median_max([c.start_s for c in calls if c.start_s is not None]),
        _median_max([c.stop_s for c in calls if c.stop_s is not None]),
        health,
        complete,
        f"{out.duplicates} / {out.stuck}",
        wav,
    ]


HEADER = [
    "fault",
    "calls answered success",
    "start answer median / max",
    "stop answer median / max",
    "/health max time; codes (catalogue state)",
    "rows complete after the fault's end",
    "duplicates / stuck `recording`",
    "WAVs = what was sent",
]


def table(outcomes: list[Outcome], run: int | None = None) -> str:
    header = (["run"] if run is None else []) + HEADER
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for out in outcomes:
        cells = row_of(out)
        if run is None:
            cells = [str(out.run), *cells]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def details(out: Outcome) -> list[str]:
    lines = []
    before = [c.start for c in out.before]
    if before:
        lines.append(f"  calls before the fault: {_counts(before)}")
    lines.extend(f"  {note}" for note in out.notes)
    if out.not_complete:
        lines.append(f"  answered calls not complete: {'; '.join(out.not_complete)}")
    if out.extra_rows:
        lines.append(f"  rows of calls not answered success: {'; '.join(out.extra_rows)}")
    if out.wav_bad:
        lines.append(f"  WAVs not as sent: {'; '.join(out.wav_bad)}")
    if out.files_without_row:
        lines.append(f"  WAV files without a row: {len(out.files_without_row)}")
    if not out.skipped:
        lines.append(
            f"  rows {out.rows}; server log: {out.error_lines} ERROR lines, "
            f"{out.tracebacks} tracebacks, {out.works_again} 'catalogue writes work again'"
        )
    return lines


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    pressure: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError), open("/proc/pressure/cpu") as fh:
        fields = fh.readline().split()[1:]
        pressure = {k: float(v) for k, v in (f.split("=") for f in fields) if k in ("avg10",)}
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "cpu_pressure": pressure,
    }


async def main_async(args: argparse.Namespace) -> int:
    chosen = [s for s in SCENARIOS if not args.only or s.key in args.only]
    unknown = set(args.only or ()) - {s.key for s in SCENARIOS}
    if unknown:
        print(f"unknown scenario(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    info = machine()
    print(
        f"machine: {info['cpus']} CPUs ({info['cpu_model']}), load {info['load_average']}, "
        f"Python {info['python']}, seed {args.seed}"
    )
    all_runs: list[dict[str, Any]] = []
    everything: list[Outcome] = []
    failed = False
    for run in range(1, args.runs + 1):
        began = time.monotonic()
        load = os.getloadavg()
        outcomes = []
        for scenario in chosen:
            print(f"run {run}: {scenario.key} ...", file=sys.stderr, flush=True)
            out = await run_scenario(scenario, run, args)
            out.run = run
            outcomes.append(out)
            failed |= bool(
                out.error or out.duplicates or out.stuck or out.not_complete or out.wav_bad
            )
        took = time.monotonic() - began
        print(f"\n## run {run} of {args.runs}: {took:.0f} s, load average before {load}\n")
        print(table(outcomes, run))
        print()
        for out in outcomes:
            print(f"{out.key}:")
            for line in details(out):
                print(line)
        all_runs.append(
            {
                "run": run,
                "seconds": took,
                "load_average_before": load,
                "outcomes": [dataclasses.asdict(o) for o in outcomes],
            }
        )
        everything.extend(outcomes)
    if args.runs > 1:
        print(f"\n## all {args.runs} runs\n")
        print(table(everything))
    if not args.no_save:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = args.out / f"catalogue-faults-{stamp}.json"
        command = " ".join(sys.argv)
        data = {"command": command, "machine": info, "seed": args.seed, "runs": all_runs}
        path.write_text(json.dumps(data, indent=1) + "\n")
        print(f"\nsaved {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 1 if failed else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1, help="repeat everything; every run is printed")
    p.add_argument(
        "--only",
        action="append",
        metavar="KEY",
        help="run only this scenario (repeatable): " + ", ".join(s.key for s in SCENARIOS),
    )
    p.add_argument("--calls", type=int, default=20, help="calls started during each fault")
    p.add_argument(
        "--scale", type=float, default=1.0, help="multiply every fault window (quick tries)"
    )
    p.add_argument("--seed", type=int, default=12, help="audio, SSRCs and port ranges")
    p.add_argument("--keep", action="store_true", help="keep the servers' files and logs")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON results")
    p.add_argument("--no-save", action="store_true", help="write no JSON file")
    raise SystemExit(asyncio.run(main_async(p.parse_args())))


if __name__ == "__main__":
    main()
