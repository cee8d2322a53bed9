"""kill -9 of a real server process in the middle of a call, then a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from callrec.catalog import Catalog
from callrec.sim.phone import PhoneCall
from tests.codecs.utils import needs_ffmpeg
from tests.server.test_recording import encoded, ffmpeg_decode, rtp_packets


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    tmp_path: Path, port: int, *, wait: bool = True, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """``callrec serve`` as a real process; with ``wait``, returns once it listens."""
    env = dict(os.environ)
    env.update(
        CALLREC_CONTROL_HOST="127.0.0.1",
        CALLREC_CONTROL_PORT=str(port),
        CALLREC_MEDIA_HOST="127.0.0.1",
        CALLREC_MEDIA_PORT_MIN="0",
        CALLREC_MEDIA_PORT_MAX="0",
        CALLREC_RECORDINGS_DIR=str(tmp_path / "recordings"),
        CALLREC_DATABASE_URL=f"sqlite:///{tmp_path / 'catalog.db'}",
        # The recording core alone: no fixed web/SIP ports to collide with a running server.
        CALLREC_WEB_ENABLED="false",
        CALLREC_SIP_ENABLED="false",
    )
    log = log or tmp_path / f"server-{time.monotonic_ns()}.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "callrec", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    if not wait:
        return proc
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("server did not start listening within 30 s")


@needs_ffmpeg
async def test_kill_9_mid_call_then_restart_recovers(tmp_path: Path) -> None:
    port = free_port()
    proc = start_server(tmp_path, port)
    packets = rtp_packets("PCMA", encoded("PCMA"))  # 100 packets, 2 s
    try:
        call = PhoneCall("127.0.0.1", port, session_id="k9", codec="PCMA")
        assert (await call.start())["result"] == "success"
        # 1.5 s of real-time audio, then the server dies without any chance to clean up.
        await call.send_packets(packets[:75], realtime=True)
        await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await call.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    proc = start_server(tmp_path, port)  # start-up recovery runs before it listens
    try:
        catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
        (rec,) = catalog.find()
        catalog.close()
        assert rec.status == "recovered" and rec.stop_reason == "crash"
        path = tmp_path / "recordings" / rec.path
        with wave.open(str(path), "rb") as w:
            frames = np.frombuffer(w.readframes(w.getnframes()), "<i2")
            assert w.getframerate() == 8000
        # At most ~1 s lost: 1.5 s were sent, at least 0.5 s must be there, exactly as sent.
        assert len(frames) >= 0.5 * 8000
        assert rec.duration == pytest.approx(len(frames) / 8000)
        reference = ffmpeg_decode("PCMA", encoded("PCMA"))
        np.testing.assert_array_equal(frames, reference[: len(frames)])
        assert rec.sha256 is not None and rec.size_bytes == path.stat().st_size
        # A second restart finds nothing left to recover and keeps one row.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        proc = start_server(tmp_path, port)
        catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
        assert [r.status for r in catalog.find()] == ["recovered"]
        catalog.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
