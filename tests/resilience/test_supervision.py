"""``callrec serve --workers 2`` whose main process is killed (``kill -9``): its media worker
keeps the control port served and records on, running calls and new ones alike; a new main
process started on the same settings binds the port beside it, and the orphan hands over,
taking no new connection and exiting once its own calls have ended (callrec.service.supervision).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from callrec.catalog import Catalog, RecordingInfo
from callrec.codecs import get_codec
from callrec.service.workers import port_slices
from callrec.sim.phone import PhoneCall
from tests.support.audio import read_wav
from tests.support.data import encoded
from tests.support.net import free_tcp_port, tcp_listeners
from tests.support.rtp import rtp_packets
from tests.support.serve import spawn_serve, start_serve_workers, terminate
from tests.support.waiting import wait_for, wait_until

pytestmark = pytest.mark.timeout(180)

PACKETS = rtp_packets("PCMA", encoded("PCMA"))  # 100 packets, 2 s
HALF = len(PACKETS) // 2
REFERENCE = np.frombuffer(get_codec("PCMA").decoder().decode(encoded("PCMA")), "<i2")
#: Calls started at once while both processes listen, until enough reached each.
BATCH = 8


def _settings() -> tuple[dict[str, object], int]:
    """Settings of the servers of a test (a media port range of their own), and the first
    media port of the worker's slice."""
    low = random.randrange(30000, 60000, 100)
    (_, _), (worker_low, _) = port_slices(low, low + 39, 2)
    return dict(media_port_min=low, media_port_max=low + 39, sync_interval=0.1), worker_low


def _alive(pid: int) -> bool:
    """The process ``pid`` runs (not ended, nor a zombie waiting for its new parent)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _logs(tmp_path: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in tmp_path.glob("server-*.log"))


def _rows(tmp_path: Path) -> dict[str, RecordingInfo]:
    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        rows = catalog.find(limit=10_000)
    by_id = {r.session_id: r for r in rows}
    assert len(by_id) == len(rows), "duplicate rows"
    return by_id


async def _start(port: int, sid: str) -> PhoneCall:
    call = PhoneCall("127.0.0.1", port, session_id=sid, codec="PCMA", answer_timeout=10)
    answer = await call.start()
    assert answer.get("result") == "success", (sid, answer)
    return call


async def _finish(calls: list[PhoneCall], packets: list[bytes]) -> None:
    """Send the rest of each call's audio, stop it (answered success) and hang up."""
    await asyncio.gather(*(c.send_packets(packets, realtime=False) for c in calls))
    for call in calls:
        assert (await call.stop())["result"] == "success", call.session_id
        await call.close()


def _assert_recorded(tmp_path: Path, rec: RecordingInfo) -> None:
    """The WAV opens and holds every sample sent, equal to the decode of what was sent."""
    frames, rate = read_wav(tmp_path / "recordings" / rec.path)
    assert rate == 8000
    assert len(frames) == len(PACKETS) * 160, (rec.session_id, len(frames))
    np.testing.assert_array_equal(frames, REFERENCE)


async def _calls_on_both(port: int, worker_low: int) -> tuple[list[PhoneCall], list[PhoneCall]]:
    """Calls started until at least 4 reached the worker and 1 the main process (the kernel
    picks a listener by the connection's addresses); returns (on the worker, on the main)."""
    on_worker: list[PhoneCall] = []
    on_main: list[PhoneCall] = []
    for batch in range(8):
        calls = await asyncio.gather(*(_start(port, f"a{batch}-{i}") for i in range(BATCH)))
        for call in calls:
            assert call.media_port is not None
            (on_worker if call.media_port >= worker_low else on_main).append(call)
        if len(on_worker) >= 4 and on_main:
            return on_worker, on_main
    raise AssertionError(f"{len(on_worker)} calls on the worker, {len(on_main)} on the main")


async def test_kill_9_of_the_main_process_keeps_the_port_served_until_a_new_one_takes_over(
    tmp_path: Path,
) -> None:
    port, (settings, w_low) = free_tcp_port(), _settings()
    proc = start_serve_workers(tmp_path, port, 2, **settings)
    successor: subprocess.Popen[bytes] | None = None
    try:
        worker = _worker(proc.pid)
        on_worker, on_main = await _calls_on_both(port, w_low)
        await asyncio.gather(*(c.send_packets(PACKETS[:HALF], realtime=False) for c in on_worker))

        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # The main process's calls lose their control connection with it.
        for call in on_main:
            await call.close()
        orphan_listener = tcp_listeners(port)
        assert len(orphan_listener) == 1 and _alive(worker), "the worker left the port"

        # Calls running at the kill go on and end properly.
        ended_before, across_restart = on_worker[:2], on_worker[2:]
        await _finish(ended_before, PACKETS[HALF:])
        # New calls are answered and recorded: the orphan is the one listener.
        after_kill = [await _start(port, f"b{i}") for i in range(4)]
        assert all(c.media_port is not None and c.media_port >= w_low for c in after_kill)
        await _finish(after_kill, PACKETS)
        await asyncio.gather(
            *(c.send_packets(PACKETS[HALF : HALF + 10], realtime=False) for c in across_restart)
        )

        # A new main process starts while the orphan listens and records, and takes over.
        successor = spawn_serve(tmp_path, "--workers", "2", control_port=port, **settings)

        def new_listeners() -> set[int] | None:
            assert successor is not None and successor.poll() is None, "the new server exited"
            now = tcp_listeners(port)
            return now if len(now) == 2 and not now & orphan_listener else None

        await wait_for(
            new_listeners,
            what="the new server to listen and the orphan to stop listening",
            timeout=60,
            interval=0.1,
        )
        assert _alive(worker), "the orphan exited before its calls ended"
        later = [await _start(port, f"c{i}") for i in range(4)]
        await _finish(later, PACKETS)
        # Its last calls end on their own, whole; then it exits.
        await _finish(across_restart, PACKETS[HALF + 10 :])
        await wait_for(
            lambda: not _alive(worker),
            what="the orphan to exit once its calls ended",
            timeout=30,
            interval=0.1,
        )
        assert terminate(successor, 40) == 0
    finally:
        for server in (proc, successor):
            if server is not None and server.poll() is None:
                server.kill()
                server.wait()
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)

    logs = _logs(tmp_path)
    assert "the main process has gone: still recording and taking calls" in logs
    assert "a new main process serves the control port" in logs
    assert "handed over to the new main process" in logs
    rows = _rows(tmp_path)
    # The orphan catalogued its calls itself: the ones that ended before the restart, the ones
    # that started after the kill, and (their rows there, their audio whole) those across it.
    for call in ended_before + after_kill + later:
        rec = rows[call.session_id]
        assert (rec.status, rec.stop_reason) == ("complete", "phone_stop"), rec
        assert rec.packets_received == len(PACKETS) and rec.packets_lost == 0, rec
        _assert_recorded(tmp_path, rec)
    for call in across_restart:
        _assert_recorded(tmp_path, rows[call.session_id])
    # The main process's own calls were recovered by the new one's start-up.
    for call in on_main:
        assert (rows[call.session_id].status, rows[call.session_id].stop_reason) == (
            "recovered",
            "crash",
        )


async def test_a_call_across_the_restart_is_catalogued_by_the_orphan_as_it_ended(
    tmp_path: Path,
) -> None:
    port, (settings, w_low) = free_tcp_port(), _settings()
    proc = start_serve_workers(tmp_path, port, 2, **settings)
    successor: subprocess.Popen[bytes] | None = None
    try:
        worker = _worker(proc.pid)
        on_worker, on_main = await _calls_on_both(port, w_low)
        await asyncio.gather(*(c.send_packets(PACKETS[:HALF], realtime=False) for c in on_worker))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for call in on_main:
            await call.close()
        successor = start_serve_workers(tmp_path, port, 2, **settings)
        await _finish(on_worker, PACKETS[HALF:])
        await wait_for(
            lambda: not _alive(worker), what="the orphan to exit", timeout=30, interval=0.1
        )
        assert terminate(successor, 40) == 0
    finally:
        for server in (proc, successor):
            if server is not None and server.poll() is None:
                server.kill()
                server.wait()
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)
    rows = _rows(tmp_path)
    for call in on_worker:
        rec = rows[call.session_id]
        _assert_recorded(tmp_path, rec)
        assert (rec.status, rec.stop_reason) == ("complete", "phone_stop"), rec
        assert rec.packets_received == len(PACKETS), rec


def _worker(parent: int) -> int:
    """The pid of the one media worker of a ``callrec serve --workers 2``."""
    wait_until(lambda: len(_workers(parent)) == 1, what="one media worker", timeout=30)
    (pid,) = _workers(parent)
    return pid


def _workers(parent: int) -> list[int]:
    """The pids of a ``callrec serve``'s media workers: its spawned children (not
    multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found
