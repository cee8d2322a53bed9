"""Issue 17's acceptance: two real ``callrec serve`` nodes on loopback, one PostgreSQL
catalogue (this module's own database, created and dropped) and one real S3 server
(SeaweedFS, ``tests/support/s3.py``), and no ``peer_recordings_dirs``: a node reaches the
other's audio through the store only.

Calls are recorded on both nodes; each node lists, plays (Range included) and downloads the
other's recording from the store; every upload job is claimed by the node that holds the
file, and exactly one of its runs uploaded it; the store killed while calls finish loses
nothing, /health and /metrics show the backlog, and once it is started again the uploads
catch up; a node killed -9 in the middle of a call recovers it when it restarts and then
uploads it.

The store's outage lasts :data:`OUTAGE` seconds, as long as the issue's acceptance says: the
uploads' first retries fail inside it, and a later one succeeds after it.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callrec.catalog import Catalog, JobStore
from callrec.catalog.objects import UPLOAD_KIND, ObjectQueries
from callrec.sim.phone import PhoneCall
from tests.service.test_nodes import (
    PACKETS,
    _call,
    _client,
    _listed,
    _node,
    _start,
    _stop,
)
from tests.support import postgres
from tests.support.s3 import WeedS3
from tests.support.waiting import wait_for
from tests.support.web import add_users

BUCKET = "nodes"
#: Seconds the store stays down while calls finish (see the module docstring).
OUTAGE = 30.0


@pytest.fixture
def pg_url(catalog_pg_database: str) -> Iterator[str]:
    postgres.reset_schema(catalog_pg_database)
    yield catalog_pg_database


@pytest.fixture
def weed(tmp_path: Path) -> Iterator[WeedS3]:
    server = WeedS3(tmp_path / "weed")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _audio_key(objects: ObjectQueries, rec_id: int) -> tuple[str, str] | None:
    """(key, sha256) of the recording's verified audio object, None before its upload."""
    found = [o for o in objects.objects_of(rec_id) if o.role == "audio"]
    return (found[0].key, found[0].sha256) if found else None


def _by_session(url: str) -> dict[str, Any]:
    with Catalog(url) as catalog:
        return {r.session_id: r for r in catalog.find(limit=100)}


async def test_two_nodes_share_one_store(tmp_path: Path, pg_url: str, weed: WeedS3) -> None:
    with Catalog(pg_url) as catalog:
        catalog.migrate()
        tokens = add_users(catalog)
    token = tokens["admin"]
    store_settings: dict[str, object] = {
        **weed.settings(BUCKET),
        "storage_sweep_interval": 2,
        "storage_timeout": 2.0,
    }
    alpha = _node(tmp_path, "alpha", "127.0.0.2", pg_url, **store_settings)
    beta = _node(tmp_path, "beta", "127.0.0.3", pg_url, **store_settings)
    root = {"alpha": alpha.root, "beta": beta.root}
    with Catalog(pg_url) as catalog:
        objects = ObjectQueries(catalog)
        jobs = JobStore(catalog)
        try:
            _start(tmp_path, alpha, beta)
            # -- calls on both nodes, uploaded by their own nodes ---------------------------
            for n in range(2):
                await _call(alpha, f"a{n}")
                await _call(beta, f"b{n}")

            def uploaded(*sessions: str) -> bool:
                recs = _by_session(pg_url)
                return all(
                    s in recs and recs[s].status != "recording" and _audio_key(objects, recs[s].id)
                    for s in sessions
                )

            await wait_for(
                lambda: uploaded("a0", "a1", "b0", "b1"),
                what="four uploads",
                timeout=30,
                interval=0.3,
            )
            recs = _by_session(pg_url)
            for session, rec in recs.items():
                assert rec.node == session_node(session)
                assert rec.path.startswith(f"{rec.node}/")
                key, sha = _audio_key(objects, rec.id) or ("", "")
                local = (root[rec.node] / rec.path).read_bytes()
                assert sha == rec.sha256 == hashlib.sha256(local).hexdigest()
                assert weed.get(BUCKET, key) == local
            # -- each node lists, plays and downloads the other's from the store ------------
            async with _client(alpha, token) as on_alpha, _client(beta, token) as on_beta:
                for client, other in ((on_alpha, "b0"), (on_beta, "a0")):
                    items = await _listed(client)
                    assert sorted((i["session_id"], i["node"]) for i in items) == [
                        ("a0", "alpha"),
                        ("a1", "alpha"),
                        ("b0", "beta"),
                        ("b1", "beta"),
                    ]
                    rec = recs[other]
                    wav = (root[rec.node] / rec.path).read_bytes()
                    ranged = await client.get(
                        f"/api/v1/recordings/{rec.id}/audio", headers={"range": "bytes=44-1043"}
                    )
                    assert ranged.status_code == 206, ranged.text
                    assert ranged.content == wav[44:1044]
                    tail = await client.get(
                        f"/api/v1/recordings/{rec.id}/audio", headers={"range": "bytes=-100"}
                    )
                    assert tail.status_code == 206 and tail.content == wav[-100:]
                    whole = await client.get(f"/api/v1/recordings/{rec.id}/download")
                    assert whole.status_code == 200 and whole.content == wav

                # -- the store goes away while calls finish ---------------------------------
                weed.kill()
                down_at = time.monotonic()
                await _call(alpha, "a-down")
                await _call(beta, "b-down")
                await wait_for(
                    lambda: _failed_uploads(jobs) >= 2,
                    what="both nodes' uploads to fail",
                    timeout=OUTAGE + 5,
                    interval=0.3,
                )
                for client, node in ((on_alpha, alpha), (on_beta, beta)):
                    health = (await client.get("/health")).json()
                    assert (health["status"], health["node"]) == ("ok", node.name)
                    # One catalogue: each node shows the whole installation's backlog.
                    assert health["storage"]["backlog"] == 2, health
                    assert health["storage"]["oldest_age"] >= 0
                    metrics = (await client.get("/metrics")).text
                    assert "callrec_storage_backlog 2.0" in metrics
                    assert "callrec_storage_oldest_unuploaded_seconds" in metrics
                # Nothing lost meanwhile: both recordings finished, on their disks.
                down = _by_session(pg_url)
                for session in ("a-down", "b-down"):
                    rec = down[session]
                    assert rec.status == "complete"
                    assert (root[rec.node] / rec.path).is_file()
                await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
                weed.start()
                await wait_for(
                    lambda: uploaded("a-down", "b-down"),
                    what="the uploads to catch up",
                    timeout=60,
                    interval=0.5,
                )
                for client in (on_alpha, on_beta):
                    health = (await client.get("/health")).json()
                    assert health["storage"]["backlog"] == 0, health

            # -- beta killed -9 in the middle of a call ---------------------------------------
            call = PhoneCall(beta.host, beta.control_port, session_id="b-crash", codec="PCMA")
            assert (await call.start())["result"] == "success"
            await call.send_packets(PACKETS[:50], realtime=True)
            assert beta.proc is not None
            beta.proc.send_signal(signal.SIGKILL)
            beta.proc.wait(10)
            await call.close()
            assert _by_session(pg_url)["b-crash"].status == "recording"
            _start(tmp_path, beta)
            await wait_for(
                lambda: uploaded("b-crash"),
                what="beta to recover its call and upload it",
                timeout=40,
                interval=0.3,
            )
            crashed = _by_session(pg_url)["b-crash"]
            assert (crashed.status, crashed.node, crashed.stop_reason) == (
                "recovered",
                "beta",
                "crash",
            )
            key, sha = _audio_key(objects, crashed.id) or ("", "")
            assert weed.get(BUCKET, key) == (beta.root / crashed.path).read_bytes()
            # alpha plays it from the store.
            async with _client(alpha, token) as on_alpha:
                played = await on_alpha.get(f"/api/v1/recordings/{crashed.id}/audio")
                assert played.status_code == 200
                assert hashlib.sha256(played.content).hexdigest() == sha
        finally:
            _stop(alpha, beta)
        # -- every upload job: its node's runners only, and one run did it --------------------
        uploads = jobs.list_jobs(kind=UPLOAD_KIND, limit=100)
        recs = _by_session(pg_url)
        assert len(uploads) == len(recs) == 7
        for job in uploads:
            node = job.key.rsplit("@", 1)[1]
            assert job.state == "done", job
            history = jobs.attempts(job.id)
            done = [a for a in history if a.outcome == "done"]
            assert len(done) == 1, (job.key, history)
            assert {a.runner.split(":")[0] for a in history} == {node}, (job.key, history)
        assert alpha.proc is not None and alpha.proc.returncode == 0


def session_node(session: str) -> str:
    return "alpha" if session.startswith("a") else "beta"


def _failed_uploads(jobs: JobStore) -> int:
    return sum(
        1
        for j in jobs.list_jobs(kind=UPLOAD_KIND, limit=100)
        if j.state == "queued" and j.last_error
    )
