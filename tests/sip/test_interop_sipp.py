"""Interoperability with SIPp (Debian ``sip-tester``), a SIP tool no one here wrote.

Three SIPp runs against callrec on loopback, scenarios in ``tests/data/sip``:

1. ``register.xml``: the callee registers (401 challenge, digest credentials, 200);
2. ``callee.xml`` on the registered port: answers, streams ``callee.alaw`` with rtp_stream;
3. ``caller.xml``: INVITE (407 challenge, credentials), streams ``caller.alaw``, sends
   ``INFO Record: on``, talks 1.5 s, ``INFO Record: off``, hangs up, and gets 481 for an
   INFO in the ended dialog.

SIPp exits 0 only if every expected answer came. The recording must then hold the caller's
file on the left and the callee's on the right, sample for sample as FFmpeg decodes them.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.support.audio import matches_looped, read_wav
from tests.support.data import CODEC_DATA, SIP_DATA
from tests.support.net import free_udp_port, udp_bound
from tests.support.sip import SipEnv, start_env, stop_env
from tests.support.waiting import wait_for, wait_idle

SIPP = shutil.which("sipp")
needs_sipp = pytest.mark.skipif(
    SIPP is None, reason="sipp is not installed (Debian sip-tester; `make sysdeps` installs it)"
)


async def sipp(
    env: SipEnv, cwd: Path, scenario: str, *args: str, timeout: float = 30
) -> tuple[int, str]:
    assert SIPP is not None
    host, port = env.address
    proc = await asyncio.create_subprocess_exec(
        SIPP,
        f"{host}:{port}",
        "-sf",
        str(SIP_DATA / scenario),
        "-m",
        "1",
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-nostdin",
        "-trace_err",
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        *args,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout + 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    errors = "".join(p.read_text(errors="replace") for p in cwd.glob("*_errors.log"))
    return proc.returncode or 0, stderr.decode(errors="replace") + errors


def decode_reference(data: bytes) -> np.ndarray:
    """FFmpeg's decode of A-law ``data``: the committed reference, byte for byte mapped."""
    codes = (CODEC_DATA / "codes.alaw").read_bytes()
    table = np.frombuffer((CODEC_DATA / "codes.alaw.ffmpeg.s16le").read_bytes(), "<i2")
    lookup = np.zeros(256, np.int16)
    lookup[np.frombuffer(codes, np.uint8)] = table
    return lookup[np.frombuffer(data, np.uint8)]


@needs_sipp
async def test_sipp_call_with_info_record(tmp_path: Path) -> None:
    env = await start_env(tmp_path)
    work = tmp_path / "sipp"
    work.mkdir()
    caller_audio = (CODEC_DATA / "signal.alaw").read_bytes()
    callee_audio = caller_audio[::-1]
    (work / "caller.alaw").write_bytes(caller_audio)
    (work / "callee.alaw").write_bytes(callee_audio)
    try:
        await env.add_account("alice", "alice-pw")
        await env.add_account("bob", "bob-pw")
        bob_port = str(free_udp_port())
        rc, log = await sipp(
            env,
            work,
            "register.xml",
            "-p",
            bob_port,
            "-key",
            "user",
            "bob",
            "-au",
            "bob",
            "-ap",
            "bob-pw",
        )
        assert rc == 0, log
        callee = asyncio.create_task(
            sipp(env, work, "callee.xml", "-p", bob_port, "-key", "user", "bob")
        )
        # The INVITE waits in the socket's queue once SIPp has bound its port.
        await wait_for(
            lambda: udp_bound(int(bob_port)) or callee.done(),
            what="the callee SIPp to bind its port",
            timeout=10,
        )
        rc, log = await sipp(
            env,
            work,
            "caller.xml",
            "-s",
            "bob",
            "-p",
            str(free_udp_port()),
            "-key",
            "user",
            "alice",
            "-au",
            "alice",
            "-ap",
            "alice-pw",
        )
        assert rc == 0, log
        rc, log = await callee
        assert rc == 0, log
        await wait_idle(env.server)  # the recording (its Record: on answered 200) finished

        rows = env.server.catalog.find(limit=10)
        assert len(rows) == 1
        rec = rows[0]
        assert (rec.source, rec.status, rec.stop_reason) == ("sip", "complete", "record_off")
        assert (rec.local_number, rec.remote_number, rec.channels) == ("alice", "bob", 2)
        assert rec.duration == pytest.approx(1.5, abs=0.2)
        frames, rate = read_wav(env.server.root / rec.path)
        assert (frames.shape[1:], rate) == ((2,), 8000)
        left = matches_looped(frames[:, 0], decode_reference(caller_audio))
        right = matches_looped(frames[:, 1], decode_reference(callee_audio))
        # Both streamed throughout the 1.5 s: each channel holds nearly all of it.
        assert left > 1.3 * 8000 and right > 1.3 * 8000
        assert (env.server.root / rec.extra["sip"]["mix"]).is_file()
    finally:
        await stop_env(env)
