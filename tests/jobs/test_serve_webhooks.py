"""A real ``callrec serve`` process, a real call and a real webhook receiver: the webhook of a
recording is delivered; a ``kill -9`` of the server while the receiver holds the delivery
open is followed, after a restart, by the same event again, which the receiver dedupes by
its id into exactly one effective delivery."""

from __future__ import annotations

import asyncio
import json
import random
import signal
from pathlib import Path

from callrec.catalog import Catalog, JobStore
from callrec.sim.phone import PhoneCall
from tests.jobs.test_webhooks import SECRET, docs_verify
from tests.support.data import encoded
from tests.support.net import free_tcp_port
from tests.support.receiver import Received, webhook_receiver
from tests.support.rtp import rtp_packets
from tests.support.serve import start_serve, start_serve_workers, terminate
from tests.support.waiting import wait_for

PACKETS = rtp_packets("PCMA", encoded("PCMA"))[:50]  # 1 s


async def _record_a_call(port: int) -> None:
    call = PhoneCall("127.0.0.1", port, session_id="hook1", codec="PCMA")
    assert (await call.start())["result"] == "success"
    await call.send_packets(PACKETS, realtime=False)
    assert (await call.stop())["result"] == "success"
    await call.close()


def _effective(received: list[Received]) -> dict[str, Received]:
    """What a receiver that dedupes by Callrec-Event-Id acts on: the first of each id
    whose signature checks."""
    verify = docs_verify()
    kept: dict[str, Received] = {}
    for got in received:
        assert verify(SECRET, got.headers["Callrec-Signature"], got.body)
        kept.setdefault(got.headers["Callrec-Event-Id"], got)
    return kept


async def test_kill_9_mid_delivery_then_restart_delivers_exactly_once_effectively(
    tmp_path: Path,
) -> None:
    port = free_tcp_port()
    with webhook_receiver(script=["hold"]) as receiver:
        settings = {
            "webhook_url": receiver.url,
            "webhook_secret": SECRET,
            "webhook_timeout": 60,
            "job_poll_interval": 0.2,
        }
        proc = start_serve(tmp_path, port, **settings)
        try:
            await _record_a_call(port)
            # The delivery is under way: the receiver holds it open.
            await asyncio.to_thread(receiver.wait_requests, 1)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        receiver.released.set()  # its 200 goes to a dead connection
        proc = start_serve(tmp_path, port, **settings)
        catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
        try:
            received = await asyncio.to_thread(receiver.wait_requests, 2)
            store = JobStore(catalog)

            def delivered() -> bool:
                jobs = store.list_jobs(kind="webhook:*")
                return len(jobs) == 1 and jobs[0].state == "done"

            await wait_for(delivered, what="the delivery to be done", timeout=30, interval=0.1)
            (job,) = store.list_jobs(kind="webhook:*")
            history = store.attempts(job.id)
            (rec,) = catalog.find()
        finally:
            catalog.close()
            terminate(proc)
    assert proc.returncode == 0
    effective = _effective(received)
    assert len(received) == 2 and len(effective) == 1
    (event,) = effective.values()
    body = json.loads(event.body)
    assert body["type"] == "recording.completed"
    assert body["data"]["recording"]["sha256"] == rec.sha256
    assert body["data"]["recording"]["id"] == rec.id
    # The killed run never reported; the second is the one on record.
    assert job.attempts == 2
    assert [(a.attempt, a.outcome) for a in history] == [(2, "done")]
    logs = "".join(p.read_text() for p in tmp_path.glob("server-*.log"))
    assert "took back 1 jobs of ended runners" in logs


async def test_calls_recorded_by_a_media_worker_get_their_webhook_too(tmp_path: Path) -> None:
    """With ``--workers 2`` the runner of the main process hears of the worker's recordings
    through the live registry; every call's event is delivered once."""
    port = free_tcp_port()
    low = random.randrange(30000, 60000, 100)
    with webhook_receiver() as receiver:
        proc = start_serve_workers(
            tmp_path,
            port,
            2,
            media_port_min=low,
            media_port_max=low + 39,
            webhook_url=receiver.url,
            webhook_secret=SECRET,
            job_poll_interval=0.2,
        )
        try:
            calls = [
                PhoneCall("127.0.0.1", port, session_id=f"w{n}", codec="PCMA") for n in range(12)
            ]
            assert all(
                a["result"] == "success" for a in await asyncio.gather(*(c.start() for c in calls))
            )
            await asyncio.gather(*(c.send_packets(PACKETS, realtime=False) for c in calls))
            ports = {c.media_port for c in calls}
            for call in calls:
                assert (await call.stop())["result"] == "success"
                await call.close()
            received = await asyncio.to_thread(receiver.wait_requests, 12)
        finally:
            terminate(proc, 40)
    assert proc.returncode == 0
    # Both processes recorded some of the calls (the worker's slice is the upper half).
    assert any(p is not None and p >= low + 20 for p in ports)
    assert any(p is not None and p < low + 20 for p in ports)
    effective = _effective(received)
    assert len(received) == 12 and len(effective) == 12
    sessions = {json.loads(r.body)["data"]["recording"]["session_id"] for r in received}
    assert sessions == {f"w{n}" for n in range(12)}
