"""Interoperability with baresip (Debian), a real softphone, headless on loopback.

Two baresip instances register to callrec with digest authentication; alice (account policy
``always``) dials bob, who answers automatically. Each sends a WAV file through the
``aufile`` source as PCMA; there is no sound card: received audio goes to an ``aubridge``
device nobody listens to. callrec relays the media both ways and records the whole call:
left must be alice's file and right bob's, sample for sample.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.codecs.utils import DATA_DIR as CODEC_DATA
from tests.sip.conftest import SipEnv, start_env, stop_env
from tests.sip.test_interop_sipp import matches_looped

BARESIP = shutil.which("baresip")
MODULES = Path("/usr/lib/baresip/modules")
needs_baresip = pytest.mark.skipif(
    BARESIP is None or not (MODULES / "aufile.so").is_file(),
    reason="baresip is not installed (Debian baresip; `make sysdeps` installs it)",
)


def free_port_pair() -> int:
    """A port p with p and p+1 free for UDP and TCP (baresip puts SIP/TLS on p+1)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port >= 65535:
            continue
        try:
            for p in (port, port + 1):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair on loopback")


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(samples.astype("<i2").tobytes())


def baresip_home(
    root: Path, user: str, password: str, server: tuple[str, int], audio: Path
) -> Path:
    home = root / user
    home.mkdir()
    port = free_port_pair()
    (home / "config").write_text(
        "\n".join(
            [
                "poll_method epoll",
                f"sip_listen 127.0.0.1:{port}",
                "call_local_timeout 30",
                f"audio_player aubridge,{user}",
                f"audio_source aufile,{audio}",
                f"audio_alert aubridge,{user}",
                f"module_path {MODULES}",
                "module g711.so",
                "module aufile.so",
                "module aubridge.so",
                "module_tmp account.so",
                "module_app menu.so",
                "",
            ]
        )
    )
    host, sip_port = server
    (home / "accounts").write_text(
        f"<sip:{user}@{host}:{sip_port}>;auth_pass={password};audio_codecs=PCMA;"
        "regint=300;answermode=auto;ptime=20\n"
    )
    return home


async def run_baresip(home: Path, *args: str, timeout: float) -> asyncio.subprocess.Process:
    assert BARESIP is not None
    with (home / "baresip.log").open("wb") as log:
        return await asyncio.create_subprocess_exec(
            "timeout",
            str(int(timeout)),
            BARESIP,
            "-n",
            "127.0.0.1",  # loopback only: never the machine's other addresses
            "-f",
            str(home),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )


async def wait_registered(env: SipEnv, user: str, *, timeout: float = 10) -> None:
    assert env.sip.core is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not env.sip.core.registrar.lookup(user, loop.time()):
        if loop.time() > deadline:
            raise AssertionError(f"{user} did not register within {timeout} s")
        await asyncio.sleep(0.05)


@needs_baresip
async def test_baresip_call_recorded_with_policy_always(tmp_path: Path) -> None:
    env = await start_env(tmp_path)
    ref = np.frombuffer((CODEC_DATA / "signal.alaw.ffmpeg.s16le").read_bytes(), "<i2")
    ref_rev = ref[::-1].copy()
    write_wav(tmp_path / "alice.wav", np.tile(ref, 5))  # 10 s, longer than the call
    write_wav(tmp_path / "bob.wav", np.tile(ref_rev, 5))
    procs: list[asyncio.subprocess.Process] = []
    try:
        await env.add_account("alice", "alice-pw", policy="always")
        await env.add_account("bob", "bob-pw")
        bob = baresip_home(tmp_path, "bob", "bob-pw", env.address, tmp_path / "bob.wav")
        alice = baresip_home(tmp_path, "alice", "alice-pw", env.address, tmp_path / "alice.wav")
        procs.append(await run_baresip(bob, "-t", "9", timeout=20))
        await wait_registered(env, "bob")
        host, port = env.address
        procs.append(
            await run_baresip(alice, "-t", "4", "-e", f"/dial sip:bob@{host}:{port}", timeout=20)
        )
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 25)
        await asyncio.sleep(0.3)
        logs = "\n".join((h / "baresip.log").read_text(errors="replace") for h in (alice, bob))
        assert "Call established" in logs, logs

        rows = env.server.catalog.find(limit=10)
        assert len(rows) == 1, logs
        rec = rows[0]
        assert (rec.source, rec.status, rec.stop_reason, rec.channels) == (
            "sip",
            "complete",
            "hangup",
            2,
        )
        assert rec.extra["sip"]["trigger"] == "always"
        assert (rec.local_number, rec.remote_number) == ("alice", "bob")
        assert rec.duration is not None and 2.0 < rec.duration < 5.0
        with wave.open(str(env.server.root / rec.path), "rb") as w:
            frames = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
        left = matches_looped(frames[:, 0], ref)
        right = matches_looped(frames[:, 1], ref_rev)
        assert left > 1.5 * 8000 and right > 1.5 * 8000
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await stop_env(env)
