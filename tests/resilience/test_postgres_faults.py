"""Record first against a real PostgreSQL catalogue that stops, hangs and restarts.

The catalogue is a throwaway cluster of the test's own (``pg_cluster``: never the shared
server on 5432), stopped, SIGSTOPped (hung: its kernel keeps the connections open, nothing
answers) and restarted while phones record and new calls start. Every call is answered
``success`` at once, every call's audio is on disk, and once the catalogue is back every row
is ``complete``, once.
"""

from __future__ import annotations

import asyncio
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from callrec.catalog import Catalog, RecordingInfo
from callrec.engine import catchup
from callrec.engine import journal as journal_module
from callrec.exceptions import CatalogError
from callrec.service import Service
from callrec.sim.phone import PhoneCall
from tests.support.pgcluster import PgCluster
from tests.support.rtp import rtp_packets
from tests.support.settings import server_settings, sip_settings
from tests.support.waiting import wait_catalogued, wait_for, wait_idle, wait_received

#: 1 s of PCMA per call.
PACKETS = rtp_packets("PCMA", bytes(range(256)) * 31 + bytes(64))
#: A start is answered at once whatever the catalogue does; this bounds "at once" generously
#: for a loaded 2-core machine (the fault took 10+ s to answer before record first).
ANSWER_BOUND = 3.0


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Short hang detection and back-off, so a test does not wait 10 s per retry."""
    monkeypatch.setattr(journal_module, "WRITE_TIMEOUT", 1.0)
    monkeypatch.setattr(journal_module, "RETRY_MAX", 1.0)
    monkeypatch.setattr(catchup, "RETRY_MAX", 1.0)
    yield


async def record_call(server: Service, sid: str) -> float:
    """One whole call; returns how long the start took to be answered."""
    call = PhoneCall("127.0.0.1", server.control_port, session_id=sid, codec="PCMA")
    try:
        began = time.monotonic()
        answer = await call.start()
        took = time.monotonic() - began
        assert answer["result"] == "success", answer
        await call.send_packets(PACKETS, realtime=False)
        await wait_received(server, sid, len(PACKETS))
        began = time.monotonic()
        assert (await call.stop())["result"] == "success"
        return max(took, time.monotonic() - began)
    finally:
        await call.close()


def check_rows(url: str, root: Path, sessions: set[str]) -> None:
    with Catalog(url) as catalog:
        rows = catalog.find(limit=10_000)
    by_session: dict[str, RecordingInfo] = {r.session_id: r for r in rows}
    assert len(by_session) == len(rows), "duplicate rows"
    assert set(by_session) == sessions
    for row in rows:
        assert (row.status, row.stop_reason) == ("complete", "phone_stop"), row
        with wave.open(str(root / row.path), "rb") as w:
            assert w.getnframes() == 8000 * round(row.duration or 0), row
        assert row.duration and row.duration >= 1.0


async def test_stopped_hung_and_restarted_mid_run(tmp_path: Path, pg_cluster: PgCluster) -> None:
    settings = server_settings(tmp_path, database_url=pg_cluster.url)
    root = settings.recordings_dir.resolve()
    server = Service(settings)
    await server.start()
    answers: list[float] = []
    try:
        answers.append(await record_call(server, "healthy"))
        await wait_idle(server)
        # A call that runs through every fault.
        live = PhoneCall("127.0.0.1", server.control_port, session_id="live", codec="PCMA")
        assert (await live.start())["result"] == "success"
        await live.send_packets(PACKETS[:10], realtime=False)

        pg_cluster.stop("fast")  # stopped
        for n in range(3):
            answers.append(await record_call(server, f"stopped{n}"))
        await wait_for(lambda: server.journal.status().failures > 0, what="a failed write")
        pg_cluster.start()
        await wait_catalogued(server, timeout=60)

        pg_cluster.pause()  # hung: nothing answers, nothing is refused
        try:
            for n in range(3):
                answers.append(await record_call(server, f"hung{n}"))
            await wait_for(
                lambda: server.journal.status().state != "ok", what="the catalogue reported"
            )
            assert server.journal.status().backlog > 0
        finally:
            pg_cluster.resume()
        await wait_catalogued(server, timeout=60)

        restarting = asyncio.ensure_future(asyncio.to_thread(pg_cluster.restart, "immediate"))
        for n in range(2):
            answers.append(await record_call(server, f"restarted{n}"))
        await restarting

        await live.send_packets(PACKETS[10:], realtime=False)
        await wait_received(server, "live", len(PACKETS))
        assert (await live.stop())["result"] == "success"
        await live.close()
        await wait_idle(server, timeout=60)
    finally:
        await server.stop()
    assert max(answers) < ANSWER_BOUND, answers
    sessions = {"healthy", "live", *(f"stopped{n}" for n in range(3))}
    sessions |= {f"hung{n}" for n in range(3)} | {f"restarted{n}" for n in range(2)}
    check_rows(pg_cluster.url, root, sessions)


async def test_a_server_started_while_postgresql_is_down_records_and_catches_up(
    tmp_path: Path, pg_cluster: PgCluster
) -> None:
    pg_cluster.stop("fast")
    # Every front end on: none of them may keep the server from starting.
    settings = sip_settings(
        tmp_path, database_url=pg_cluster.url, web_enabled=True, web_host="127.0.0.1", web_port=0
    )
    server = Service(settings)
    await server.start()  # does not wait for the catalogue
    try:
        assert server.sip is not None and server.sip in server._started
        assert server.web is not None and server.web in server._started
        for n in range(3):
            await record_call(server, f"early{n}")
        await wait_idle(server, catalogued=False)
        assert server.journal.status().backlog > 0
        pg_cluster.start()  # an empty database: the schema is made, then the rows
        await wait_catalogued(server, timeout=60)
    finally:
        await server.stop()
    check_rows(pg_cluster.url, settings.recordings_dir.resolve(), {"early0", "early1", "early2"})


async def test_a_hung_catalogue_never_holds_a_server_that_stops(
    tmp_path: Path, pg_cluster: PgCluster
) -> None:
    """SIGTERM while the catalogue hangs: the recordings are finalised, the rows wait in the
    journal file, and the next start (the catalogue back) puts them in."""
    settings = server_settings(tmp_path, database_url=pg_cluster.url)
    server = Service(settings)
    await server.start()
    try:
        await record_call(server, "before")
        await wait_idle(server)
        pg_cluster.pause()
        await record_call(server, "during")
        began = time.monotonic()
    finally:
        await server.stop()
    stopped_in = time.monotonic() - began
    pg_cluster.resume()
    assert stopped_in < 30, stopped_in
    server = Service(settings)
    await server.start()
    try:
        await wait_catalogued(server, timeout=60)
    finally:
        await server.stop()
    check_rows(pg_cluster.url, settings.recordings_dir.resolve(), {"before", "during"})


def test_interrupt_ends_a_call_stuck_on_a_hung_server(pg_cluster: PgCluster) -> None:
    """No libpq or server timeout ends a query to a stopped (not dead) server: the catalogue's
    interrupt does, whether the call waits in a query or in the pool's pre-ping."""
    catalog = Catalog(f"{pg_cluster.url}?connect_timeout=2")
    catalog.migrate()
    assert catalog.count() == 0  # a pooled connection now exists
    pg_cluster.pause()
    failed: list[BaseException] = []

    def count() -> None:
        try:
            catalog.count()
        except CatalogError as exc:
            failed.append(exc)

    thread = threading.Thread(target=count, daemon=True)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive()  # hung, as a stopped server leaves it
    assert catalog.interrupt() >= 1
    thread.join(15)  # the reconnect that follows is bounded by connect_timeout
    assert not thread.is_alive() and failed
    pg_cluster.resume()
    assert catalog.count() == 0  # and the catalogue works again
    catalog.close()
