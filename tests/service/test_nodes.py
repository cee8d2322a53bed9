"""Several ``callrec serve`` nodes on one PostgreSQL catalogue (docs/scaling.md): two real
server processes on their own loopback addresses, each with its own recordings directory,
sharing this module's own database (created and dropped by the fixture).

Calls are recorded on both; each node's API lists the other's recordings with their node;
the completion jobs and webhooks of each recording run once across the two; a node plays the
other's recording (Range included) when it reaches its directory; the live page of one shows
the other's call; a node killed -9 recovers its call when it restarts, and the other node,
restarted meanwhile, leaves that call alone. Two nodes started at the same moment on an empty
database both end up serving, the schema migrated once.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from callrec.catalog import Catalog, JobStore, head_revision
from callrec.config import DEFAULT_FILENAME_TEMPLATE
from callrec.integrity.keys import load_or_create
from callrec.sim.phone import PhoneCall
from tests.jobs.test_webhooks import SECRET
from tests.support import postgres
from tests.support.data import encoded
from tests.support.net import free_tcp_port
from tests.support.receiver import webhook_receiver
from tests.support.rtp import rtp_packets
from tests.support.serve import spawn_serve, terminate
from tests.support.waiting import wait_for, wait_until
from tests.support.web import add_users

PACKETS = rtp_packets("PCMA", encoded("PCMA"))  # 100 packets, 2 s
#: Seconds a node may take to start serving.
START = 40


@dataclass
class Node:
    name: str
    host: str
    control_port: int
    web_port: int
    root: Path
    settings: dict[str, object]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.web_port}"


def _node(tmp_path: Path, name: str, host: str, url: str, **extra: object) -> Node:
    control, web = free_tcp_port(), free_tcp_port()
    root = tmp_path / name / "recordings"
    settings: dict[str, object] = dict(
        node_name=name,
        control_host=host,
        control_port=control,
        media_host=host,
        recordings_dir=root,
        database_url=url,
        web_enabled=True,
        web_host=host,
        web_port=web,
        web_public_url=f"http://{host}:{web}",
        job_poll_interval=0.2,
        # As docs/scaling.md says: the phones of two nodes may send the same names in the
        # same second (here they do), and the catalogue keeps each path once.
        filename_template="{node}/" + DEFAULT_FILENAME_TEMPLATE,
        **extra,
    )
    return Node(name, host, control, web, root, settings)


def _accepts(host: str, port: int) -> bool:
    import socket

    try:
        socket.create_connection((host, port), timeout=0.2).close()
    except OSError:
        return False
    return True


def _start(tmp_path: Path, *nodes: Node) -> None:
    """Start ``nodes`` at the same moment; return once each serves its phones and its web."""
    for node in nodes:
        node.proc = spawn_serve(tmp_path, log=tmp_path / f"{node.name}.log", **node.settings)

    def serving() -> bool:
        for node in nodes:
            assert node.proc is not None
            if node.proc.poll() is not None:
                log = (tmp_path / f"{node.name}.log").read_text()
                raise AssertionError(f"node {node.name} exited: {log[-3000:]}")
        return all(_accepts(n.host, n.control_port) and _accepts(n.host, n.web_port) for n in nodes)

    wait_until(serving, what="both nodes to serve", timeout=START)


def _stop(*nodes: Node) -> None:
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            terminate(node.proc, 30)


@pytest.fixture
def pg_url(catalog_pg_database: str) -> Iterator[str]:
    """The module's database, emptied: no schema yet."""
    postgres.reset_schema(catalog_pg_database)
    yield catalog_pg_database


async def _call(node: Node, session_id: str, packets: int = 50) -> None:
    call = PhoneCall(node.host, node.control_port, session_id=session_id, codec="PCMA")
    assert (await call.start())["result"] == "success"
    await call.send_packets(PACKETS[:packets], realtime=False)
    assert (await call.stop())["result"] == "success"
    await call.close()


def _client(node: Node, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=node.base, headers={"authorization": f"Bearer {token}"}, timeout=30
    )


async def _listed(client: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    answer = await client.get("/api/v1/recordings", params=params)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


def test_two_nodes_started_at_once_on_an_empty_database_migrate_it_once(
    tmp_path: Path, pg_url: str
) -> None:
    """Neither node finds the schema; one migrates under the advisory lock while the other
    waits, and both serve. The first admin is made once too."""
    alpha = _node(tmp_path, "alpha", "127.0.0.2", pg_url)
    beta = _node(tmp_path, "beta", "127.0.0.3", pg_url)
    try:
        _start(tmp_path, alpha, beta)
    finally:
        _stop(alpha, beta)
    assert alpha.proc is not None and beta.proc is not None
    assert (alpha.proc.returncode, beta.proc.returncode) == (0, 0)
    with Catalog(pg_url) as catalog:
        assert catalog.revision() == head_revision()
        assert [u.username for u in catalog.list_users()] == ["admin"]
    logs = [(tmp_path / f"{n}.log").read_text() for n in ("alpha", "beta")]
    # One of them migrated from nothing; the other found the schema current.
    assert sum("migrated from None to" in log for log in logs) == 1, logs


def test_a_second_server_with_the_same_node_name_is_told_and_reported(
    tmp_path: Path, pg_url: str
) -> None:
    """Both record (a recording depends on nothing but the phone and the disk), but the one
    started second logs an error and is degraded on /health until the first one stops."""
    first = _node(tmp_path, "alpha", "127.0.0.2", pg_url)
    second = _node(tmp_path / "again", "alpha", "127.0.0.3", pg_url)
    second.root = tmp_path / "again-recordings"
    second.settings["recordings_dir"] = second.root

    def health(node: Node) -> tuple[int, Any]:
        answer = httpx.get(f"{node.base}/health", timeout=10)
        return answer.status_code, answer.json()["node_clash"]

    try:
        _start(tmp_path, first)
        wait_until(lambda: health(first) == (200, None), what="the first node's health", timeout=20)
        (tmp_path / "again").mkdir()
        _start(tmp_path / "again", second)
        clash = wait_until(
            lambda: health(second)[1], what="the second node to be refused its name", timeout=20
        )
        assert "node_name 'alpha' is also used by another running server" in clash
        assert health(second)[0] == 503
        assert health(first) == (200, None)
        _stop(first)
        # A clean stop gives the name up; the second server holds it at its next heartbeat.
        wait_until(lambda: health(second) == (200, None), what="the name to pass", timeout=20)
    finally:
        _stop(first, second)
    log = (tmp_path / "again" / "alpha.log").read_text()
    assert "is also used by another running server" in log
    assert "node_name 'alpha' is this server's now" in log
    assert "is also used" not in (tmp_path / "alpha.log").read_text()


async def test_two_nodes_record_list_play_and_run_jobs_once(tmp_path: Path, pg_url: str) -> None:
    with Catalog(pg_url) as catalog:
        catalog.migrate()
        tokens = add_users(catalog)
    token = tokens["admin"]
    # One signing key for the installation: every node signs the one chain with it.
    key = tmp_path / "integrity" / "signing-key.pem"
    load_or_create(key)
    with webhook_receiver() as receiver:
        common: dict[str, object] = dict(
            webhook_url=receiver.url,
            webhook_secret=SECRET,
            integrity_key_file=key,
            integrity_sign_interval=1,
        )
        beta_root = tmp_path / "beta" / "recordings"
        # alpha reaches beta's recordings (as through a network mount); beta not alpha's.
        alpha = _node(
            tmp_path,
            "alpha",
            "127.0.0.2",
            pg_url,
            peer_recordings_dirs=f"beta={beta_root}",
            **common,
        )
        beta = _node(tmp_path, "beta", "127.0.0.3", pg_url, **common)
        try:
            _start(tmp_path, alpha, beta)
            for n in range(3):
                await _call(alpha, f"a{n}")
                await _call(beta, f"b{n}")
            received = await asyncio.to_thread(receiver.wait_requests, 6)
            async with _client(alpha, token) as on_alpha, _client(beta, token) as on_beta:
                await wait_for(
                    lambda: len(_final(pg_url)) == 6,
                    what="six finished rows",
                    timeout=20,
                    interval=0.2,
                )
                for client in (on_alpha, on_beta):
                    items = await _listed(client)
                    assert sorted((i["session_id"], i["node"]) for i in items) == [
                        ("a0", "alpha"),
                        ("a1", "alpha"),
                        ("a2", "alpha"),
                        ("b0", "beta"),
                        ("b1", "beta"),
                        ("b2", "beta"),
                    ]
                    only_beta = await _listed(client, node="beta")
                    assert {i["session_id"] for i in only_beta} == {"b0", "b1", "b2"}
                    export = await client.get("/api/v1/recordings.csv", params={"node": "alpha"})
                    rows = list(csv.DictReader(io.StringIO(export.text)))
                    assert {r["node"] for r in rows} == {"alpha"} and len(rows) == 3
                by_session = {i["session_id"]: i for i in await _listed(on_alpha)}
                b0, a0 = by_session["b0"], by_session["a0"]
                assert b0["path"].startswith("beta/") and a0["path"].startswith("alpha/")
                # The list page has a node column and filter once two nodes recorded.
                page = await on_beta.get("/recordings", params={"node": "alpha"})
                assert page.status_code == 200
                assert (
                    "<th>Node</th>" in page.text and "<option selected>alpha</option>" in page.text
                )
                assert page.text.count('class="node">alpha<') == 3
                assert 'class="node">beta<' not in page.text
                detail = await on_beta.get(f"/recordings/{a0['id']}")
                assert '<th>Node</th><td class="node">alpha</td>' in detail.text
                # alpha plays beta's recording from beta's directory, Range included.
                wav = (beta_root / b0["path"]).read_bytes()
                ranged = await on_alpha.get(
                    f"/api/v1/recordings/{b0['id']}/audio", headers={"range": "bytes=44-1043"}
                )
                assert ranged.status_code == 206
                assert ranged.content == wav[44:1044]
                whole = await on_alpha.get(f"/api/v1/recordings/{b0['id']}/audio")
                assert whole.status_code == 200 and whole.content == wav
                # beta cannot reach alpha's directory: it says where the recording is.
                refused = await on_beta.get(f"/api/v1/recordings/{a0['id']}/audio")
                assert refused.status_code == 404
                assert "recorded on node alpha" in refused.json()["detail"]
                # Each node plays its own.
                own = await on_beta.get(f"/api/v1/recordings/{b0['id']}/audio")
                assert own.status_code == 200 and own.content == wav
            await wait_for(
                lambda: _signed(pg_url) >= 2, what="two signing runs", timeout=20, interval=0.2
            )
        finally:
            _stop(alpha, beta)
    # Every recording's webhook went out once, whichever node's runner took its job.
    sessions = sorted(json.loads(r.body)["data"]["recording"]["session_id"] for r in received)
    assert sessions == ["a0", "a1", "a2", "b0", "b1", "b2"]
    with Catalog(pg_url) as catalog:
        store = JobStore(catalog)
        jobs = store.list_jobs(limit=1000)
        runners: set[str] = set()
        for job in jobs:
            if job.state != "done":
                continue
            history = store.attempts(job.id)
            # Exactly one run of each job did it (a completion may be put off first while
            # the journal catalogues the end), by one of the two nodes' runners.
            done = [a for a in history if a.outcome == "done"]
            assert len(done) == 1, (job.kind, job.key, history)
            assert all(a.outcome in ("done", "deferred") for a in history), history
            runners.add(done[0].runner.split(":")[0])
        kinds = {j.kind for j in jobs if j.state == "done"}
        assert {"integrity.sign", "recording.completed"} <= kinds
        assert runners <= {"alpha", "beta"}
        # The one hash chain: six recorded entries, seq 1..6 without a gap or a fork.
        with psycopg.connect(_plain(pg_url)) as conn:
            seqs = [r[0] for r in conn.execute("SELECT seq FROM integrity_chain ORDER BY seq")]
        assert seqs == list(range(1, 7))
        assert len({r.uid for r in catalog.find(limit=100)}) == 6
    assert (alpha.proc and alpha.proc.returncode, beta.proc and beta.proc.returncode) == (0, 0)


async def test_live_calls_across_nodes_and_a_node_killed_mid_call(
    tmp_path: Path, pg_url: str
) -> None:
    with Catalog(pg_url) as catalog:
        catalog.migrate()
        tokens = add_users(catalog)
    token = tokens["admin"]
    alpha = _node(tmp_path, "alpha", "127.0.0.2", pg_url)
    beta = _node(tmp_path, "beta", "127.0.0.3", pg_url)
    try:
        _start(tmp_path, alpha, beta)
        async with _client(alpha, token) as on_alpha:
            call = PhoneCall(beta.host, beta.control_port, session_id="live1", codec="PCMA")
            assert (await call.start())["result"] == "success"
            await call.send_packets(PACKETS[:50], realtime=True)

            async def on_alpha_live() -> list[dict[str, Any]]:
                answer = await on_alpha.get("/api/v1/live")
                assert answer.status_code == 200
                return list(answer.json())

            async def shown() -> bool:
                return any(s["session_id"] == "live1" for s in await on_alpha_live())

            await _wait_async(shown, "alpha's live view to show beta's call")
            (live,) = [s for s in await on_alpha_live() if s["session_id"] == "live1"]
            assert live["node"] == "beta" and live["remote"] is True
            assert live["node_url"] == beta.base
            # alpha's health counts its own calls only, and names it.
            health = (await on_alpha.get("/health")).json()
            assert (health["node"], health["live_sessions"]) == ("alpha", 0)
            # The live page says where to listen.
            page = await on_alpha.get("/live")
            assert "on node beta" in page.text and beta.base in page.text
            # beta dies in the middle of the call.
            assert beta.proc is not None
            beta.proc.send_signal(signal.SIGKILL)
            beta.proc.wait(10)
            await call.close()
            # alpha, restarted meanwhile, leaves beta's open recording alone.
            _stop(alpha)
            _start(tmp_path, alpha)
            await asyncio.sleep(1)  # alpha's start-up recovery has run before it listened
            with Catalog(pg_url) as catalog:
                (row,) = catalog.find(limit=10)
            assert (row.status, row.node) == ("recording", "beta")

            async def gone() -> bool:
                return not await on_alpha_live()

            # beta's live row expires (no heartbeat) and leaves alpha's live page.
            await _wait_async(gone, "beta's dead call to leave alpha's live view", timeout=40)
        # beta restarts and recovers its own call.
        _start(tmp_path, beta)

        def recovered() -> bool:
            with Catalog(pg_url) as catalog:
                (rec,) = catalog.find(limit=10)
                return rec.status == "recovered"

        await wait_for(recovered, what="beta to recover its call", timeout=30, interval=0.2)
        with Catalog(pg_url) as catalog:
            (rec,) = catalog.find(limit=10)
        assert (rec.node, rec.stop_reason) == ("beta", "crash")
        assert rec.duration is not None and rec.duration > 0.3
        assert (beta.root / rec.path).is_file()
    finally:
        _stop(alpha, beta)


def _final(url: str) -> list[Any]:
    with Catalog(url) as catalog:
        return [r for r in catalog.find(limit=100) if r.status != "recording"]


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _signed(url: str) -> int:
    with psycopg.connect(_plain(url)) as conn:
        row = conn.execute("SELECT count(*) FROM integrity_signatures").fetchone()
    return int(row[0]) if row else 0


async def _wait_async(check: Any, what: str, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)
