"""Hundreds of start/stream/stop cycles: resources return to their baseline."""

from __future__ import annotations

import asyncio
import os
import threading

from callrec.service import Service
from callrec.sim.phone import PhoneCall
from callrec.sim.soak import churn
from tests.support.waiting import wait_for

CYCLES = 400


async def test_a_call_holds_what_the_churn_counts(server: Service) -> None:
    # The baseline check below can fail: a call in progress is seen holding its port,
    # its recording and its connection (the test server binds any free port, 0..0).
    call = PhoneCall("127.0.0.1", server.control_port, session_id="held", codec="PCMA")
    assert (await call.start())["result"] == "success"
    held = server.held()
    assert (held.ports, held.recordings, held.connections) == (1, 1, 1)
    assert (await call.stop())["result"] == "success"
    await call.close()


async def _start_thread_pools() -> None:
    """Thread pools start their threads when first needed: the engine's media I/O thread at
    its first tick, the loop's default executor one more whenever a job finds every thread
    busy (a race a fast or a loaded machine loses). With them all started before the churn
    takes its baseline, only a thread that a call leaves behind can raise the count."""
    size = min(32, (os.cpu_count() or 1) + 4)  # a ThreadPoolExecutor's default size
    barrier = threading.Barrier(size)
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(None, barrier.wait, 5) for _ in range(size)))
    await wait_for(
        lambda: any(t.name.startswith("media-io") for t in threading.enumerate()),
        what="the engine's first tick to start its media I/O thread",
    )


async def test_churn_returns_to_baseline(server: Service) -> None:
    await _start_thread_pools()
    report = await churn(server, CYCLES)
    print("\n".join(report.lines()))
    assert report.failed == 0
    b, a = report.before, report.after
    assert (a.sessions, a.connections, a.ports_in_use) == (0, 0, 0)
    assert a.fds <= b.fds  # no descriptor kept by any of the calls
    assert a.threads <= b.threads
    # Memory: no per-call growth (a generous bound: 400 calls x 20 KiB).
    assert a.rss_kib - b.rss_kib < CYCLES * 20
    rows = server.catalog.count()
    assert rows == CYCLES + 20
    assert server.catalog.count(status="complete") == rows
