"""Readings of processes from ``/proc``: what a load test measures the recorder by.

CPU time and resident memory of a process or a process tree, the process listening on a TCP
port, and the kernel's counters of the UDP sockets bound to given ports (bytes queued unread,
datagrams dropped because a receive buffer was full). :class:`ProcessMeter` samples a set of
processes (a server's tree, re-read as workers come and go) together with this process.
Linux only.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

#: The process tree of a spawned server is re-read this often (workers may come and go).
TREE_REFRESH: Final = 5.0

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
