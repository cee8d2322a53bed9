"""50 phones recording; the server is killed with SIGKILL at seeded moments, several times
in a row, once during start-up recovery. Every call that started is catalogued once,
playable, flagged recovered, with its audio up to about a second before the kill."""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import numpy as np

from callrec.catalog import Catalog
from callrec.codecs import get_codec
from callrec.service.supervision import STATE_DIR
from callrec.sim.phone import PhoneCall
from tests.support.audio import read_wav
from tests.support.data import encoded
from tests.support.net import free_tcp_port
from tests.support.rtp import rtp_packets
from tests.support.serve import spawn_serve, start_serve, terminate
from tests.support.waiting import wait_until

PHONES = 50
ROUNDS = 3
SEED = 20261126


async def phone(port: int, sid: str, packets: list, sent: dict[str, int], ok: set[str]) -> None:
    call = PhoneCall("127.0.0.1", port, session_id=sid, codec="PCMA", answer_timeout=10)
    try:
        if (await call.start()).get("result") != "success":
            return
        ok.add(sid)
        for i in range(0, len(packets), 5):
            await call.send_packets(packets[i : i + 5], realtime=True)
            sent[sid] = i + 5
    except Exception:
        pass
    finally:
        await call.close()


async def test_repeated_kill_9_loses_no_call(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    port = free_tcp_port()
    data = encoded("PCMA") * 3  # 6 s of audio per phone, more than any round lasts
    packets = rtp_packets("PCMA", data)
    reference = np.frombuffer(get_codec("PCMA").decoder().decode(data), "<i2")
    sent_at_kill: dict[str, int] = {}
    started: set[str] = set()
    for rnd in range(ROUNDS):
        proc = start_serve(tmp_path, port)
        sent: dict[str, int] = {}
        ok: set[str] = set()
        tasks = [
            asyncio.create_task(phone(port, f"r{rnd}-{i}", packets, sent, ok))
            for i in range(PHONES)
        ]
        await asyncio.sleep(rng.uniform(1.5, 3.0))  # a seeded random moment of the kill
        snapshot = dict(sent)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sent_at_kill.update({sid: snapshot.get(sid, 0) for sid in ok})
        started |= ok

    # Killed again in the middle of start-up recovery.
    log = tmp_path / "recovery.log"
    proc = spawn_serve(tmp_path, log=log, control_port=port)
    # Polled often: the kill must come while the recovery runs.
    wait_until(
        lambda: "after a crash" in log.read_text(errors="replace"),
        what="start-up recovery to begin",
        timeout=30,
        interval=0.005,
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    proc = start_serve(tmp_path, port)
    assert terminate(proc, 30) == 0

    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        rows = catalog.find(limit=10_000)
    by_id = {r.session_id: r for r in rows}
    assert len(by_id) == len(rows), "duplicate rows"
    assert started, "no call was answered"
    missing = started - set(by_id)
    assert not missing, f"started calls missing from the catalogue: {sorted(missing)}"
    # A row may exist for a call whose answer the kill cut off: it is recovered all the same.
    root = tmp_path / "recordings"
    # The server's own state (its locks, callrec.service.supervision) is not a recording.
    on_disk = {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0] != STATE_DIR
    }
    assert on_disk <= {r.path for r in rows}, f"orphan files: {on_disk - {r.path for r in rows}}"
    # A kill between a row and its file leaves a row without a file: marked failed, and
    # only for a call that was never answered.
    for rec in rows:
        if rec.path not in on_disk:
            assert rec.status == "failed" and rec.session_id not in started, rec
    for sid, rec in by_id.items():
        if rec.path not in on_disk:
            continue
        assert rec.status == "recovered" and rec.stop_reason == "crash", (sid, rec.status)
        frames, rate = read_wav(root / rec.path)
        assert rate == 8000
        sent_seconds = sent_at_kill.get(sid, 0) * 0.02
        assert len(frames) / 8000 >= sent_seconds - 1.0, (sid, len(frames) / 8000, sent_seconds)
        np.testing.assert_array_equal(frames, reference[: len(frames)])
