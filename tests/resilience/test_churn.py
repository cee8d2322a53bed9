"""Hundreds of start/stream/stop cycles: resources return to their baseline."""

from __future__ import annotations

from callrec.service import Service
from callrec.sim.phone import PhoneCall
from callrec.sim.soak import churn

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


async def test_churn_returns_to_baseline(server: Service) -> None:
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
