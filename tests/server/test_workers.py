"""``callrec serve --workers N``: calls spread over processes, one catalogue, crash recovery."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from callrec.catalog import Catalog, RecordingInfo
from callrec.config import Settings
from callrec.engine import LiveSession
from callrec.exceptions import ConfigError
from callrec.media.wav import HEADER_SIZE
from callrec.service import Service
from callrec.service.workers import port_slices, slice_settings
from callrec.sim.phone import PhoneCall
from tests.support.audio import read_wav
from tests.support.data import encoded
from tests.support.net import free_tcp_port, tcp_listeners
from tests.support.rtp import rtp_packets
from tests.support.serve import start_serve_workers, terminate
from tests.support.settings import server_settings
from tests.support.waiting import wait_for

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
    return start_serve_workers(
        tmp_path, port, workers, media_port_min=low, media_port_max=high, sync_interval=0.1
    )


def _worker_pid(parent: int) -> int:
    """The media worker of a ``--workers 2`` server (not multiprocessing's helper)."""
    for task in os.listdir(f"/proc/{parent}/task"):
        with open(f"/proc/{parent}/task/{task}/children") as f:
            for pid in f.read().split():
                with open(f"/proc/{pid}/cmdline", "rb") as c:
                    if b"spawn_main" in c.read():
                        return int(pid)
    raise AssertionError("no media worker process")


def _files(catalog: Catalog, tmp_path: Path, calls: list[PhoneCall]) -> list[Path]:
    """The recording files of ``calls`` (their rows exist once the start is answered)."""
    ids = {c.session_id for c in calls}
    return [tmp_path / "recordings" / r.path for r in catalog.find() if r.session_id in ids]


def _exited(pid: int) -> bool:
    """The process ``pid`` has ended (a zombie, or reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


async def _start_calls(port: int, count: int, prefix: str) -> list[PhoneCall]:
    calls = [
        PhoneCall("127.0.0.1", port, session_id=f"{prefix}{i}", codec="PCMA") for i in range(count)
    ]
    answers = await asyncio.gather(*(c.start() for c in calls))
    assert all(a["result"] == "success" for a in answers), answers
    return calls


async def test_calls_spread_over_both_processes_and_every_one_is_recorded(
    tmp_path: Path,
) -> None:
    port, (low, high) = free_tcp_port(), _port_range()
    proc = _serve(tmp_path, port, low, high)
    try:
        calls = await _start_calls(port, 16, "w")
        await asyncio.gather(*(c.send_packets(PACKETS, realtime=False) for c in calls))
        answers = await asyncio.gather(*(c.stop() for c in calls))
        assert all(a["result"] == "success" for a in answers)
        for call in calls:
            await call.close()
    finally:
        terminate(proc, 40)
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
        frames, _ = read_wav(tmp_path / "recordings" / rec.path)
        if reference is None:
            reference = frames
        np.testing.assert_array_equal(frames, reference)
        assert len(frames) == len(PACKETS) * 160


async def test_kill_9_of_a_worker_recovers_its_calls_and_a_new_worker_takes_over(
    tmp_path: Path,
) -> None:
    port, (low, high) = free_tcp_port(), _port_range()
    (_, _), (w_low, w_high) = port_slices(low, high, 2)
    proc = _serve(tmp_path, port, low, high)
    try:
        calls = await _start_calls(port, 12, "k")
        on_worker = [c for c in calls if c.media_port is not None and c.media_port >= w_low]
        on_main = [c for c in calls if c not in on_worker]
        assert on_worker and on_main
        await asyncio.gather(*(c.send_packets(PACKETS[:50], realtime=False) for c in calls))
        catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
        files = _files(catalog, tmp_path, on_worker)
        await wait_for(
            lambda: all(f.stat().st_size > HEADER_SIZE for f in files),
            what="the worker to write audio to each of its calls' files",
            timeout=10,
            interval=0.1,
        )
        os.kill(_worker_pid(proc.pid), signal.SIGKILL)
        # The main process's calls go on; the worker's lose their control connection.
        await asyncio.gather(*(c.send_packets(PACKETS[50:], realtime=False) for c in on_main))
        for call in on_main:
            assert (await call.stop())["result"] == "success"
        for call in calls:
            await call.close()

        # Its rows are finished by the main process as start-up recovery would.
        def rows_if_finished() -> dict[str, RecordingInfo] | None:
            recs = {r.session_id: r for r in catalog.find()}
            return recs if all(recs[c.session_id].status != "recording" for c in calls) else None

        recs = await wait_for(
            rows_if_finished,
            what="every row to be finished after the kill",
            timeout=20,
            interval=0.1,
        )
        for call in on_worker:
            rec = recs[call.session_id]
            assert (rec.status, rec.stop_reason) == ("recovered", "crash")
            assert 0 < rec.duration <= 1.0 and rec.sha256 is not None
        for call in on_main:
            rec = recs[call.session_id]
            assert rec.status == "complete" and rec.packets_received == len(PACKETS)
        # A new worker listens on the port again and records on its slice.
        await wait_for(
            lambda: len(tcp_listeners(port)) == 2,
            what="a new worker to listen on the port",
            timeout=20,
            interval=0.1,
        )
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
        terminate(proc, 40)
    assert proc.returncode == 0


async def test_an_orphaned_worker_records_on_and_sigterm_finalises_its_calls(
    tmp_path: Path,
) -> None:
    # The main process killed: its worker keeps the port and its calls (the hand-over to a
    # new main process is tests/resilience/test_supervision.py); SIGTERM, as to any worker,
    # finalises what it records.
    port, (low, high) = free_tcp_port(), _port_range()
    (_, _), (w_low, _) = port_slices(low, high, 2)
    proc = _serve(tmp_path, port, low, high)
    worker = _worker_pid(proc.pid)
    try:
        calls = await _start_calls(port, 12, "m")
        await asyncio.gather(*(c.send_packets(PACKETS, realtime=False) for c in calls))
        on_worker = [c for c in calls if c.media_port is not None and c.media_port >= w_low]
        with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
            files = _files(catalog, tmp_path, on_worker)
        everything = HEADER_SIZE + len(PACKETS) * 160 * 2
        await wait_for(
            lambda: all(f.stat().st_size >= everything for f in files),
            what="the worker to write every packet of its calls",
            timeout=10,
            interval=0.1,
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await wait_for(
            lambda: any(
                "the main process has gone" in p.read_text() for p in tmp_path.glob("server-*.log")
            ),
            what="the worker to notice that its main process has gone",
            timeout=10,
            interval=0.1,
        )
        assert not _exited(worker) and len(tcp_listeners(port)) == 1
        os.kill(worker, signal.SIGTERM)
        await wait_for(lambda: _exited(worker), what="the orphaned worker to stop", timeout=30)
        for call in calls:
            await call.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        if not _exited(worker):
            os.kill(worker, signal.SIGKILL)
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
    terminate(proc, 40)
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
        await wait_for(
            lambda: len(tcp_listeners(server.control_port)) >= 2,
            what="the worker to listen on the control port",
            timeout=30,
            interval=0.1,
        )
        calls = await _start_calls(server.control_port, 12, "v")
        await asyncio.gather(*(c.send_packets(PACKETS, realtime=False) for c in calls))
        (_, _), (w_low, _) = port_slices(low, high, 2)
        remote = {c.session_id for c in calls if c.media_port is not None and c.media_port >= w_low}
        assert remote

        def live_if_reported() -> dict[str, LiveSession] | None:
            live = {s.session_id: s for s in server.live.live_sessions()}
            if len(live) == 12 and all(live[i].counters["received"] == 100 for i in remote):
                return live
            return None

        live = await wait_for(
            live_if_reported,
            what="the worker to report its sessions with every packet received",
            timeout=10,
            interval=0.1,
        )
        assert set(live) == {c.session_id for c in calls}
        assert all(live[i].counters["received"] == 100 and live[i].duration == 2.0 for i in remote)
        assert server.live.total_sessions == 12
        for call in calls:
            assert (await call.stop())["result"] == "success"
            await call.close()
        await wait_for(
            lambda: server.live.live_sessions() == [],
            what="every session to leave the live view",
            timeout=10,
            interval=0.1,
        )
        finished = {live.session_id for event, live in events if event == "finished"}
        started = {live.session_id for event, live in events if event == "started"}
        assert started == finished == {c.session_id for c in calls}
    finally:
        await server.stop()


async def test_more_workers_than_executor_threads_start_record_and_stop(tmp_path: Path) -> None:
    # Each worker is watched by a thread of its own: watchers in the default executor (a few
    # threads on a small machine) would starve the finishing of recordings and the shutdown.
    port, (low, high) = free_tcp_port(), _port_range(80)
    proc = _serve(tmp_path, port, low, high, workers=8)
    try:
        calls = await _start_calls(port, 24, "e")
        await asyncio.gather(*(c.send_packets(PACKETS[:20], realtime=False) for c in calls))
        for call in calls:
            assert (await call.stop())["result"] == "success"
            await call.close()
    finally:
        started = time.monotonic()
        terminate(proc, 40)
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
