"""kill -9 of a real server process in the middle of a call, then a restart."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import numpy as np
import pytest

from callrec.catalog import Catalog
from callrec.sim.phone import PhoneCall
from tests.support.audio import read_wav
from tests.support.data import encoded
from tests.support.ffmpeg import ffmpeg_samples, needs_ffmpeg
from tests.support.net import free_tcp_port
from tests.support.rtp import rtp_packets
from tests.support.serve import start_serve, terminate


@needs_ffmpeg
async def test_kill_9_mid_call_then_restart_recovers(tmp_path: Path) -> None:
    port = free_tcp_port()
    proc = start_serve(tmp_path, port)
    packets = rtp_packets("PCMA", encoded("PCMA"))  # 100 packets, 2 s
    try:
        call = PhoneCall("127.0.0.1", port, session_id="k9", codec="PCMA")
        assert (await call.start())["result"] == "success"
        # 1.5 s of real-time audio, then the server dies without any chance to clean up.
        await call.send_packets(packets[:75], realtime=True)
        await asyncio.sleep(0.1)  # the moment of the kill: the loss bound below counts from it
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await call.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    proc = start_serve(tmp_path, port)  # start-up recovery runs before it listens
    try:
        catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
        (rec,) = catalog.find()
        catalog.close()
        assert rec.status == "recovered" and rec.stop_reason == "crash"
        path = tmp_path / "recordings" / rec.path
        frames, rate = read_wav(path)
        assert rate == 8000
        # At most ~1 s lost: 1.5 s were sent, at least 0.5 s must be there, exactly as sent.
        assert len(frames) >= 0.5 * 8000
        assert rec.duration == pytest.approx(len(frames) / 8000)
        reference = ffmpeg_samples("PCMA", encoded("PCMA"))
        np.testing.assert_array_equal(frames, reference[: len(frames)])
        assert rec.sha256 is not None and rec.size_bytes == path.stat().st_size
        # A second restart finds nothing left to recover and keeps one row.
        assert terminate(proc) == 0
        proc = start_serve(tmp_path, port)
        catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
        assert [r.status for r in catalog.find()] == ["recovered"]
        catalog.close()
    finally:
        terminate(proc)
