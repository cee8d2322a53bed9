"""What the ingest benchmark's peers (GStreamer, rtpengine) share: free ports, their memory
counted once, and the wait until a freshly started recorder has gone quiet."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from callrec.sim.meters import ProcessMeter, udp_socket_stats

#: A peer has finished starting up once all its processes together use less CPU than this
#: (cores).
SETTLED_CPU = 0.05
SETTLE_TIMEOUT = 60.0


def free_udp_ports(count: int) -> list[int]:
    """Ports the kernel says are free now (bound together so they differ, then let go)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def pss_kib(pids: list[int]) -> int:
    """Proportional set size, summed: shared library pages counted once over all processes."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total


def bound(port: int) -> bool:
    return bool(udp_socket_stats({port}))


async def settle(meter: ProcessMeter) -> None:
    """Wait (bounded) until the peer has finished starting up: hundreds of processes loading
    their plugins, or hundreds of calls being set up, would otherwise starve the generator in
    its first seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT
    last = meter.sample()
    while loop.time() < deadline:
        await asyncio.sleep(1.0)
        now = meter.sample()
        if (now.cpu - last.cpu) / (now.at - last.at) < SETTLED_CPU:
            return
        last = now
