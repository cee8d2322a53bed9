"""``callrec serve --workers N``: calls spread over processes, one catalogue, crash recovery."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from callrec.catalog import Catalog
from callrec.config import Settings
from callrec.engine import LiveSession
from callrec.exceptions import ConfigError
from callrec.service import Service
from callrec.service.workers import port_slices, slice_settings
from callrec.sim.phone import PhoneCall
from tests.server.conftest import server_settings
from tests.server.test_crash import free_port
from tests.server.test_recording import encoded, rtp_packets

pytestmark = pytest.mark.timeout(120)

PACKETS = rtp_packets("PCMA", encoded("PCMA"))  # 100 packets, 2 s


def test_port_slices_cover_the_range_without_overlap() -> None:
    assert port_slices(41000, 42999, 2) == [(41000, 41999), (42000, 42999)]
    assert port_slices(10, 16, 3) == [(10, 11), (12, 13), (14, 16)]
    for count in (1, 2, 3, 7):
        slices = port_slices(40000, 40099, count)
        ports = [p for low, high in slices for p in range(low, high + 1)]
        assert ports == list(range(40000, 40100))
    with pytest.raises(ValueError):
        port_slices(1, 2, 3)


def test_slice_settings_give_workers_no_front_ends() -> None:
    settings = Settings(workers=2, media_port_min=41000, media_port_max=42999)
    main, worker = slice_settings(settings, 0), slice_settings(settings, 1)
    assert (main.media_port_min, main.media_port_max) == (41000, 41999)
    assert (worker.media_port_min, worker.media_port_max) == (42000, 42999)
    assert main.web_enabled == settings.web_enabled and main.sip_enabled == settings.sip_enabled
    assert not worker.web_enabled and not worker.sip_enabled


def test_workers_need_a_port_range() -> None:
    with pytest.raises(ConfigError, match="media port range"):
        Settings(workers=2, media_port_min=0, media_port_max=0)
    with pytest.raises(ConfigError, match="workers must be"):
        Settings(workers=0)


def _port_range(size: int = 40) -> tuple[int, int]:
    low = random.randrange(30000, 60000, 100)
    return low, low + size - 1


def _serve(
    tmp_path: Path, port: int, low: int, high: int, workers: int = 2
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        CALLREC_CONTROL_HOST="127.0.0.1",
        CALLREC_CONTROL_PORT=str(port),
        CALLREC_MEDIA_HOST="127.0.0.1",
        CALLREC_MEDIA_PORT_MIN=str(low),
        CALLREC_MEDIA_PORT_MAX=str(high),
        CALLREC_RECORDINGS_DIR=str(tmp_path / "recordings"),
        CALLREC_DATABASE_URL=f"sqlite:///{tmp_path / 'catalog.db'}",
        CALLREC_WEB_ENABLED="false",
        CALLREC_SIP_ENABLED="false",
        CALLREC_SYNC_INTERVAL="0.1",
    )
    log = (tmp_path / f"server-{time.monotonic_ns()}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "callrec", "serve", "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        if len(_listeners(port)) == workers:
            return proc
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the {workers} processes did not all listen within 30 s")


def _listeners(port: int) -> set[int]:
    """Inodes of the sockets listening on ``port`` (one per process with SO_REUSEPORT)."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].split(":")[1], 16) == port:
                inodes.add(int(parts[9]))
    return inodes


def _worker_pid(parent: int) -> int:
    """The media worker of a ``--workers 2`` server (not multiprocessing's helper)."""
    for task in os.listdir(f"/proc/{parent}/task"):
        with open(f"/proc/{parent}/task/{task}/children") as f:
            for pid in f.read().split():
                with open(f"/proc/{pid}/cmdline", "rb") as c:
                    if b"spawn_main" in c.read():
                        return int(pid)
    raise AssertionError("no media worker process")


async def _start_calls(port: int, count: int, prefix: str) -> list[PhoneCall]:
    calls = [
        PhoneCall("127.0.0.1", port, session_id=f"{prefix}{i}", codec="PCMA") for i in range(count)
    ]
    answers = await asyncio.gather(*(c.start() for c in calls))
    assert all(a["result"] == "success" for a in answers), answers
    return calls


def _stop_terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_calls_spread_over_both_processes_and_every_one_is_recorded(
    tmp_path: Path,
) -> None:
    port, (low, high) = free_port(), _port_range()
    proc = _serve(tmp_path, port, low, high)
    try:
        calls = await _start_calls(port, 16, "w")
        await asyncio.gather(*(c.send_packets(PACKETS, realtime=False) for c in calls))
        answers = await asyncio.gather(*(c.stop() for c in calls))
        assert all(a["result"] == "success" for a in answers)
        for call in calls:
            await call.close()
    finally:
        _stop_terminate(proc)
    assert proc.returncode == 0
    # A clean shutdown: each worker stopped on its SIGTERM, none was killed.
    logs = "".join(p.read_text() for p in tmp_path.glob("server-*.log"))
    assert "worker 1] callrec.service.root: recording server stopped" in logs
    assert " ERROR " not in logs and "Traceback" not in logs
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    recs = catalog.find()
    catalog.close()
    assert len(recs) == 16
    assert {r.status for r in recs} == {"complete"}
    assert all(r.packets_received == len(PACKETS) and r.packets_lost == 0 for r in recs)
    (main_low, main_high), (w_low, w_high) = port_slices(low, high, 2)
    on_main = [r for r in recs if main_low <= r.media_port <= main_high]
    on_worker = [r for r in recs if w_low <= r.media_port <= w_high]
    # The kernel spreads connections by their addresses: 16 calls all on one side would be
    # a 1 in 30,000 chance, or SO_REUSEPORT not working.
    assert on_main and on_worker and len(on_main) + len(on_worker) == 16
    reference = None
    for rec in (on_main[0], on_worker[0]):
        with wave.open(str(tmp_path / "recordings" / rec.path), "rb") as w:
            frames = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        if reference is None:
            reference = frames
        np.testing.assert_array_equal(frames, reference)
        assert len(frames) == len(PACKETS) * 160


async def test_kill_9_of_a_worker_recovers_its_calls_and_a_new_worker_takes_over(
    tmp_path: Path,
) -> None:
    port, (low, high) = free_port(), _port_range()
    (_, _), (w_low, w_high) = port_slices(low, high, 2)
    proc = _serve(tmp_path, port, low, high)
    try:
        calls = await _start_calls(port, 12, "k")
        on_worker = [c for c in calls if c.media_port is not None and c.media_port >= w_low]
        on_main = [c for c in calls if c not in on_worker]
        assert on_worker and on_main
        await asyncio.gather(*(c.send_packets(PACKETS[:50], realtime=False) for c in calls))
        await asyncio.sleep(0.5)  # a few sync intervals: the audio is in the files
        os.kill(_worker_pid(proc.pid), signal.SIGKILL)
        # The main process's calls go on; the worker's lose their control connection.
        await asyncio.gather(*(c.send_packets(PACKETS[50:], realtime=False) for c in on_main))
        for call in on_main:
            assert (await call.stop())["result"] == "success"
        for call in calls:
            await call.close()
        # Its rows are finished by the main process as start-up recovery would.
        catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            recs = {r.session_id: r for r in catalog.find()}
            if all(recs[c.session_id].status != "recording" for c in calls):
                break
            await asyncio.sleep(0.2)
        for call in on_worker:
            rec = recs[call.session_id]
            assert (rec.status, rec.stop_reason) == ("recovered", "crash")
            assert 0 < rec.duration <= 1.0 and rec.sha256 is not None
        for call in on_main:
            rec = recs[call.session_id]
            assert rec.status == "complete" and rec.packets_received == len(PACKETS)
        # A new worker listens on the port again and records on its slice.
        deadline = time.monotonic() + 20
        while len(_listeners(port)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert len(_listeners(port)) == 2
        for attempt in range(40):
            call = PhoneCall("127.0.0.1", port, session_id=f"again{attempt}", codec="PCMA")
            assert (await call.start())["result"] == "success"
            assert call.media_port is not None
            await call.send_packets(PACKETS[:10], realtime=False)
            assert (await call.stop())["result"] == "success"
            await call.close()
            if call.media_port >= w_low:
                break
        else:
            raise AssertionError("no call reached the new worker")
        rec = next(r for r in catalog.find() if r.session_id == call.session_id)
        assert rec.status == "complete" and w_low <= rec.media_port <= w_high
        catalog.close()
    finally:
        _stop_terminate(proc)
    assert proc.returncode == 0


async def test_kill_9_of_the_main_process_lets_workers_finish_their_calls(
    tmp_path: Path,
) -> None:
    port, (low, high) = free_port(), _port_range()
    (_, _), (w_low, _) = port_slices(low, high, 2)
    proc = _serve(tmp_path, port, low, high)
    worker = _worker_pid(proc.pid)
    try:
        calls = await _start_calls(port, 12, "m")
        await asyncio.gather(*(c.send_packets(PACKETS, realtime=False) for c in calls))
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # The orphaned worker sees its pipe close and shuts down gracefully.
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{worker}") and time.monotonic() < deadline:
            with open(f"/proc/{worker}/stat") as f:
                if f.read().split()[2] == "Z":
                    break
            await asyncio.sleep(0.1)
        for call in calls:
            await call.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    recs = {r.session_id: r for r in catalog.find()}
    catalog.close()
    for call in calls:
        rec = recs[call.session_id]
        assert call.media_port is not None
        if call.media_port >= w_low:
            assert (rec.status, rec.stop_reason) == ("complete", "shutdown")
            assert rec.packets_received == len(PACKETS)
        else:  # the main process's own calls wait for the next start-up's recovery
            assert rec.status == "recording"
    # The next start recovers the main process's calls: nothing stays open.
    proc = _serve(tmp_path, port, low, high)
    _stop_terminate(proc)
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    assert {r.status for r in catalog.find()} <= {"complete", "recovered"}
    catalog.close()


async def test_main_process_shows_and_counts_the_workers_sessions(tmp_path: Path) -> None:
    low, high = _port_range()
    settings = server_settings(
        tmp_path, workers=2, media_port_min=low, media_port_max=high, sync_interval=0.1
    )
    server = Service(settings)
    events: list[tuple[str, LiveSession]] = []
    server.live.add_observer(lambda event, live: events.append((event, live)))
    try:
        await server.start()
        deadline = time.monotonic() + 30
        while len(_listeners(server.control_port)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        calls = await _start_calls(server.control_port, 12, "v")
        await asyncio.gather(*(c.send_packets(PACKETS, realtime=False) for c in calls))
        (_, _), (w_low, _) = port_slices(low, high, 2)
        remote = {c.session_id for c in calls if c.media_port is not None and c.media_port >= w_low}
        assert remote
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            live = {s.session_id: s for s in server.live.live_sessions()}
            if len(live) == 12 and all(live[i].counters["received"] == 100 for i in remote):
                break
            await asyncio.sleep(0.2)
        assert set(live) == {c.session_id for c in calls}
        assert all(live[i].counters["received"] == 100 and live[i].duration == 2.0 for i in remote)
        assert server.live.total_sessions == 12
        for call in calls:
            assert (await call.stop())["result"] == "success"
            await call.close()
        deadline = time.monotonic() + 10
        while server.live.live_sessions() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert server.live.live_sessions() == []
        finished = {live.session_id for event, live in events if event == "finished"}
        started = {live.session_id for event, live in events if event == "started"}
        assert started == finished == {c.session_id for c in calls}
    finally:
        await server.stop()


async def test_more_workers_than_executor_threads_start_record_and_stop(tmp_path: Path) -> None:
    # Each worker is watched by a thread of its own: watchers in the default executor (a few
    # threads on a small machine) would starve the finishing of recordings and the shutdown.
    port, (low, high) = free_port(), _port_range(80)
    proc = _serve(tmp_path, port, low, high, workers=8)
    try:
        calls = await _start_calls(port, 24, "e")
        await asyncio.gather(*(c.send_packets(PACKETS[:20], realtime=False) for c in calls))
        for call in calls:
            assert (await call.stop())["result"] == "success"
            await call.close()
    finally:
        started = time.monotonic()
        _stop_terminate(proc)
    assert proc.returncode == 0 and time.monotonic() - started < 20
    logs = "".join(p.read_text() for p in tmp_path.glob("server-*.log"))
    assert "started 7 media workers" in logs and " ERROR " not in logs
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    recs = catalog.find()
    catalog.close()
    assert len(recs) == 24 and {r.status for r in recs} == {"complete"}
    assert len({port_slice(r.media_port, low, high, 8) for r in recs}) >= 4


def port_slice(port: int, low: int, high: int, count: int) -> int:
    return next(i for i, (a, b) in enumerate(port_slices(low, high, count)) if a <= port <= b)


def test_serve_workers_option_is_documented() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "callrec", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    assert "--workers" in out


async def test_a_worker_that_cannot_start_does_not_hold_the_port_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import callrec.service.root as root
    import callrec.service.workers as workers

    # The child unpickles its target by name: os._exit(settings, ...) fails there at once.
    monkeypatch.setattr(root, "worker_main", os._exit)
    low, high = _port_range()
    settings = server_settings(tmp_path, workers=2, media_port_min=low, media_port_max=high)
    server = Service(settings)
    started = time.monotonic()
    try:
        await server.start()
        assert time.monotonic() - started < workers.READY_SECONDS / 2
        assert "media worker 1 did not start" in caplog.text
    finally:
        await server.stop()
