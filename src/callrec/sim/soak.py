"""Churn soak: many short calls in a row against a server in this process, with readings of
what the process holds (descriptors, threads, memory, ports) before and after.

Used by ``tests/resilience`` (bounded) and ``benchmarks/soak.py`` (long runs).
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from callrec.codecs import get_codec
from callrec.sim.phone import PhoneCall, build_packets


class Held(Protocol):
    """What a server holds now (see :meth:`callrec.service.Service.held`)."""

    @property
    def ports(self) -> int: ...

    @property
    def recordings(self) -> int: ...

    @property
    def connections(self) -> int: ...


class Server(Protocol):
    """A recording server running in this process."""

    @property
    def control_port(self) -> int: ...

    def held(self) -> Held: ...


@dataclass(frozen=True, slots=True)
class Usage:
    fds: int
    threads: int
    rss_kib: int
    ports_in_use: int
    sessions: int
    connections: int


@dataclass(frozen=True, slots=True)
class ChurnReport:
    cycles: int
    failed: int
    before: Usage
    after: Usage

    def lines(self) -> list[str]:
        b, a = self.before, self.after
        return [
            f"cycles: {self.cycles} ({self.failed} failed)",
            f"open descriptors: {b.fds} -> {a.fds}",
            f"threads: {b.threads} -> {a.threads}",
            f"RSS: {b.rss_kib} KiB -> {a.rss_kib} KiB ({a.rss_kib - b.rss_kib:+d} KiB)",
            f"UDP ports in use: {b.ports_in_use} -> {a.ports_in_use}",
            f"sessions: {b.sessions} -> {a.sessions}, connections: {b.connections} -> "
            f"{a.connections}",
        ]


def usage(server: Server) -> Usage:
    rss = 0
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    held = server.held()
    return Usage(
        fds=len(os.listdir("/proc/self/fd")),
        threads=threading.active_count(),
        rss_kib=rss,
        ports_in_use=held.ports,
        sessions=held.recordings,
        connections=held.connections,
    )


async def _settle(server: Server, seconds: float = 5.0) -> None:
    """Wait (bounded) until the server has let go of every session and connection."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        held = server.held()
        if not (held.recordings or held.connections):
            break
        await asyncio.sleep(0.02)


async def churn(
    server: Server,
    cycles: int,
    *,
    codec: str = "PCMA",
    packets_per_call: int = 5,
    warmup: int = 20,
    terminator: bytes = b"\n",
) -> ChurnReport:
    """``warmup`` calls, a reading, ``cycles`` calls, a reading (all start/stream/stop).

    Calls end their messages with ``terminator``: real phones send none, which costs an
    idle wait per message on both sides; a terminator keeps long soaks short."""
    c = get_codec(codec)
    pcm = np.zeros(c.sample_rate // 50 * packets_per_call, dtype=np.int16)
    packets = build_packets(pcm, c, ssrc=1)
    failed = 0

    async def one(i: int) -> bool:
        call = PhoneCall(
            "127.0.0.1",
            server.control_port,
            session_id=f"c{i}",
            codec=codec,
            terminator=terminator,
        )
        try:
            if (await call.start()).get("result") != "success":
                return False
            await call.send_packets(packets, realtime=False)
            return (await call.stop()).get("result") == "success"
        finally:
            await call.close()

    for i in range(warmup):
        await one(-1 - i)
    await _settle(server)
    before = usage(server)
    for i in range(cycles):
        if not await one(i):
            failed += 1
    await _settle(server)
    return ChurnReport(cycles=cycles, failed=failed, before=before, after=usage(server))
