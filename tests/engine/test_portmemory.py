"""Media ports rest after their call, across restarts and crashes (issue 14 item 2)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from callrec.engine.portmemory import SUFFIX, PortMemory


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_released_port_rests_for_the_quarantine(tmp_path: Path) -> None:
    clock = Clock()
    mem = PortMemory(tmp_path, 600, clock=clock)
    mem.open()
    mem.hold(41000)
    assert not mem.resting(41000)  # in use is the port range's business
    mem.release(41000)
    assert mem.resting(41000)
    clock.now += 599
    assert mem.resting(41000)
    clock.now += 1
    assert not mem.resting(41000)
    mem.close()


def test_rests_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    first = PortMemory(tmp_path, 600, clock=clock)
    first.open()
    first.hold(41000)
    first.release(41000)
    first.close()  # the process ended (its lock is gone with the descriptor)
    clock.now += 100
    second = PortMemory(tmp_path, 600, clock=clock)
    second.open()
    assert second.resting(41000)
    clock.now += 500
    assert not second.resting(41000)
    # The dead process's file was taken over and removed; only the new one's remains.
    assert len(list(tmp_path.glob(f"*{SUFFIX}"))) == 1
    second.close()


def test_ports_in_use_when_a_process_died_rest_from_when_that_is_found(tmp_path: Path) -> None:
    clock = Clock()
    crashed = PortMemory(tmp_path, 600, clock=clock)
    crashed.open()
    crashed.hold(41002)  # a call on it when kill -9 came
    crashed.close()
    clock.now += 3600  # whenever the next server starts
    after = PortMemory(tmp_path, 600, clock=clock)
    after.open()
    assert after.resting(41002)
    clock.now += 600
    assert not after.resting(41002)
    after.close()


def test_a_live_process_s_file_is_read_and_kept(tmp_path: Path) -> None:
    clock = Clock()
    worker = PortMemory(tmp_path, 600, clock=clock)
    worker.open()
    worker.hold(41004)
    worker.release(41004)
    other = PortMemory(tmp_path, 600, clock=clock)
    other.open()
    assert other.resting(41004)
    assert len(list(tmp_path.glob(f"*{SUFFIX}"))) == 2  # the live one's file is left alone
    worker.close()
    other.close()


def test_torn_and_foreign_lines_are_skipped(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / f"999999-dead{SUFFIX}"
    path.write_bytes(b"r 41006 999990.0\nh 41008 x\nr 70000 999999\ngarbage\nr 4101")
    mem = PortMemory(tmp_path, 600, clock=clock)
    mem.open()
    assert mem.resting(41006)
    assert not mem.resting(41008) and not mem.resting(4101)
    mem.close()


def test_release_times_are_kept(tmp_path: Path) -> None:
    clock = Clock()
    mem = PortMemory(tmp_path, 600, clock=clock)
    mem.open()
    for port in (41010, 41012, 41014):
        mem.hold(port)
        mem.release(port)
        clock.now += 1
    assert mem.released_at(41010) < mem.released_at(41012) < mem.released_at(41014)
    assert mem.released_at(41016) == 0.0
    mem.close()


def test_no_directory_still_remembers_in_memory(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("not a directory")
    mem = PortMemory(target / "ports", 600)
    mem.open()  # logs, never raises
    mem.hold(41016)
    mem.release(41016)
    assert mem.resting(41016)


def test_the_own_file_is_compacted_and_stays_locked(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("callrec.engine.portmemory.COMPACT_LINES", 50)
    clock = Clock()
    mem = PortMemory(tmp_path, 600, clock=clock)
    mem.open()
    for i in range(200):
        mem.hold(41000 + i % 10)
        mem.release(41000 + i % 10)
    (own,) = tmp_path.glob(f"*{SUFFIX}")
    assert len(own.read_bytes().splitlines()) < 80
    fd = os.open(own, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = False
        except BlockingIOError:
            locked = True
    finally:
        os.close(fd)
    assert locked
    assert all(mem.resting(41000 + i) for i in range(10))
    mem.close()
