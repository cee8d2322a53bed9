"""The recordings directory on a small filesystem that fills up mid-call."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from callrec.service import Service
from callrec.sim.phone import PhoneCall
from tests.support.rtp import rtp_packets
from tests.support.settings import server_settings
from tests.support.waiting import wait_catalogued, wait_idle, wait_received

FS_BYTES = 1024 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs. Mounting needs root, which `make test` has in CI; a user's laptop
    without it skips with this reason."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(mnt)], check=True
    )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path, leave: int) -> Path:
    """Fill the filesystem up to ``leave`` free bytes with a filler file."""
    filler = path / "filler.bin"
    free = shutil.disk_usage(path).free
    with filler.open("wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return filler


async def start(srv: Service, sid: str) -> tuple[PhoneCall, dict[str, str]]:
    call = PhoneCall("127.0.0.1", srv.control_port, session_id=sid, codec="PCMA")
    return call, await call.start()


async def test_disk_fills_mid_call_then_space_returns(small_fs: Path, tmp_path: Path) -> None:
    srv = Service(
        server_settings(
            tmp_path,
            recordings_dir=small_fs,
            disk_reserve_bytes=0,
            disk_reserve_percent=0.0,
        )
    )
    await srv.start()
    try:
        filler = fill(small_fs, leave=96 * 1024)
        call, answer = await start(srv, "full")
        assert answer["result"] == "success"
        # 20 s of audio (320 KB of PCM) into ~96 KB of space.
        packets = rtp_packets("PCMA", bytes(range(256)) * 625)
        for i in range(0, len(packets), 50):
            await call.send_packets(packets[i : i + 50], realtime=False)
            await asyncio.sleep(0.03)  # paced, 1 s of audio per 30 ms: the disk fills mid-call
        await wait_idle(srv, timeout=10)  # the full disk ended the recording
        (rec,) = srv.catalog.find()
        assert rec.status == "complete" and rec.stop_reason == "disk_full"
        path = small_fs / rec.path
        with wave.open(str(path), "rb") as w:
            frames = w.getnframes()
        assert 4 * 8000 < frames < 12 * 8000  # what fitted, in a file any reader opens
        assert rec.duration == frames / 8000
        await call.close()

        # While the disk is full, new calls are refused with disk_full.
        refused, answer = await start(srv, "refused")
        assert (answer["result"], answer["reason"]) == ("failed", "disk_full")
        await refused.close()

        # Space returns: the server takes calls again by itself.
        filler.unlink()
        again, answer = await start(srv, "again")
        assert answer["result"] == "success"
        await again.send_packets(rtp_packets("PCMA", bytes(1600)), realtime=False)
        await wait_received(srv, "again", 10)
        assert (await again.stop())["result"] == "success"
        await again.close()
        await wait_catalogued(srv)  # record first: the row follows the answer
        statuses = {r.session_id: (r.status, r.stop_reason) for r in srv.catalog.find()}
        # The refused attempt stays visible in the catalogue: a call that could not be
        # recorded is never silently missing.
        assert statuses == {
            "full": ("complete", "disk_full"),
            "refused": ("failed", "disk_full"),
            "again": ("complete", "phone_stop"),
        }
    finally:
        await srv.stop()


async def test_reserve_refuses_before_the_disk_is_full(small_fs: Path, tmp_path: Path) -> None:
    srv = Service(server_settings(tmp_path, recordings_dir=small_fs, disk_reserve_bytes=256 * 1024))
    await srv.start()
    try:
        filler = fill(small_fs, leave=200 * 1024)
        call, answer = await start(srv, "r1")
        assert (answer["result"], answer["reason"]) == ("failed", "disk_full")
        await call.close()
        assert srv.catalog.find() == []
        assert [p.name for p in small_fs.rglob("*.wav")] == []
        filler.unlink()
        call, answer = await start(srv, "r2")
        assert answer["result"] == "success"
        await call.stop()
        await call.close()
    finally:
        await srv.stop()


async def test_busy_per_device(tmp_path: Path) -> None:
    srv = Service(server_settings(tmp_path, max_sessions_per_device=2))
    await srv.start()
    try:
        calls = [
            PhoneCall("127.0.0.1", srv.control_port, session_id=str(i), codec="PCMU", device=dev)
            for i, dev in enumerate(["aa", "aa", "aa", "bb"])
        ]
        answers = [await c.start() for c in calls]
        assert [a.get("reason", "") for a in answers] == ["", "", "busy", ""]
        for c in calls:
            await c.close()
    finally:
        await srv.stop()
