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
from pathlib import Path

import numpy as np
import pytest

from tests.support.audio import matches_looped, read_wav, write_wav
from tests.support.data import CODEC_DATA
from tests.support.net import free_port_pair
from tests.support.sip import SipEnv, start_env, stop_env
from tests.support.waiting import LiveEvents, wait_for

BARESIP = shutil.which("baresip")
MODULES = Path("/usr/lib/baresip/modules")
needs_baresip = pytest.mark.skipif(
    BARESIP is None or not (MODULES / "aufile.so").is_file(),
    reason="baresip is not installed (Debian baresip; `make sysdeps` installs it)",
)


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
    core = env.sip.core
    assert core is not None
    loop = asyncio.get_running_loop()
    await wait_for(
        lambda: core.registrar.lookup(user, loop.time()),
        what=f"{user} to register",
        timeout=timeout,
    )


@needs_baresip
async def test_baresip_call_recorded_with_policy_always(tmp_path: Path) -> None:
    env = await start_env(tmp_path)
    recordings = LiveEvents(env.server)
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
        logs = "\n".join((h / "baresip.log").read_text(errors="replace") for h in (alice, bob))
        assert "Call established" in logs, logs
        await recordings.wait_finished(1)  # the call's recording, its row final

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
        frames, _ = read_wav(env.server.root / rec.path)
        left = matches_looped(frames[:, 0], ref)
        right = matches_looped(frames[:, 1], ref_rev)
        assert left > 1.5 * 8000 and right > 1.5 * 8000
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await stop_env(env)


@needs_baresip
async def test_baresip_call_forks_to_both_devices_of_one_account(tmp_path: Path) -> None:
    """Two baresip instances registered as bob: the call rings both (RFC 3261 16.6 forking);
    the one that answers gets it, the other, still ringing, is cancelled."""
    env = await start_env(tmp_path)
    recordings = LiveEvents(env.server)
    ref = np.frombuffer((CODEC_DATA / "signal.alaw.ffmpeg.s16le").read_bytes(), "<i2")
    write_wav(tmp_path / "alice.wav", np.tile(ref, 5))
    write_wav(tmp_path / "bob.wav", np.tile(ref[::-1].copy(), 5))
    procs: list[asyncio.subprocess.Process] = []
    try:
        await env.add_account("alice", "alice-pw", policy="always")
        await env.add_account("bob", "bob-pw")
        (tmp_path / "desk").mkdir()
        (tmp_path / "mobile").mkdir()
        desk = baresip_home(tmp_path / "desk", "bob", "bob-pw", env.address, tmp_path / "bob.wav")
        mobile = baresip_home(
            tmp_path / "mobile", "bob", "bob-pw", env.address, tmp_path / "bob.wav"
        )
        # The desk phone rings and is never picked up; the mobile answers.
        accounts = desk / "accounts"
        accounts.write_text(accounts.read_text().replace("answermode=auto", "answermode=manual"))
        procs.append(await run_baresip(desk, "-t", "12", timeout=20))
        procs.append(await run_baresip(mobile, "-t", "12", timeout=20))
        core = env.sip.core
        assert core is not None
        loop = asyncio.get_running_loop()
        await wait_for(
            lambda: len(core.registrar.lookup("bob", loop.time())) == 2,
            what="both of bob's devices to register",
            timeout=10,
        )
        alice = baresip_home(tmp_path, "alice", "alice-pw", env.address, tmp_path / "alice.wav")
        host, port = env.address
        procs.append(
            await run_baresip(alice, "-t", "4", "-e", f"/dial sip:bob@{host}:{port}", timeout=20)
        )
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 25)
        alice_log, desk_log, mobile_log = (
            (h / "baresip.log").read_text(errors="replace") for h in (alice, desk, mobile)
        )
        everything = f"alice:\n{alice_log}\ndesk:\n{desk_log}\nmobile:\n{mobile_log}"
        assert "Call established" in alice_log, everything
        # Both devices got the call; only the mobile answered, the desk phone's ringing ended.
        assert "answering call" in mobile_log, everything
        assert "Incoming call" in desk_log and "session closed" in desk_log, everything
        assert "answering call" not in desk_log, everything
        await recordings.wait_finished(1)
        [rec] = env.server.catalog.find(limit=10)
        assert (rec.local_number, rec.remote_number, rec.status) == ("alice", "bob", "complete")
        assert core.calls == {}
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await stop_env(env)
