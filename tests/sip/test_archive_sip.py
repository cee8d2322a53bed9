"""A SIP call's stereo recording (left the caller, right the callee) archived (issue 16,
part 4): it stays stereo, FLAC sample for sample, Opus of exactly its length, each voice on
its side."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from callrec.engine.archive import archive_sweep
from callrec.media.decode import layout, read_all
from callrec.media.wav import sha256_file
from tests.sip.ua import TestPhone, play
from tests.support.data import CODEC_DATA
from tests.support.rtp import alaw_packets
from tests.support.sip import SipEnv, start_env, stop_env
from tests.support.waiting import wait_idle


def loudness(x: np.ndarray, window: int = 160) -> np.ndarray:
    usable = len(x) // window * window
    return np.sqrt(np.mean(x[:usable].astype(np.float64).reshape(-1, window) ** 2, axis=1))


@pytest.mark.parametrize("fmt", ["flac", "opus"])
async def test_a_stereo_sip_recording_stays_stereo(tmp_path: Path, fmt: str) -> None:
    env: SipEnv = await start_env(tmp_path)
    alice = TestPhone("alice", "alice-pw", env.address)
    bob = TestPhone("bob", "bob-pw", env.address)
    try:
        await env.add_account("alice", "alice-pw")
        await env.add_account("bob", "bob-pw")
        for phone in (alice, bob):
            await phone.start()
            assert (await phone.register()).status == 200
        answering = asyncio.create_task(bob.answer_call())
        assert (await alice.invite("bob")).status == 200
        await answering
        data = (CODEC_DATA / "signal.alaw").read_bytes()  # 2 s
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.1
        # The callee talks only in the first second: the right channel goes quiet after it.
        talk = [
            asyncio.create_task(play(alice, alaw_packets(data, ssrc=0xA11CE), start=t0)),
            asyncio.create_task(play(bob, alaw_packets(data[:8000], ssrc=0xB0B), start=t0)),
        ]
        await asyncio.sleep(0.05)
        assert (await alice.info_record("on")).status == 200
        await asyncio.sleep(max(0.0, t0 + 2.0 - loop.time()))
        assert (await alice.bye()).status == 200
        await bob.wait_bye()
        for task in talk:
            task.cancel()
        await asyncio.gather(*talk, return_exceptions=True)
        await wait_idle(env.server)
        catalog = env.server.catalog
        (row,) = catalog.find(limit=10)
        assert row.source == "sip" and row.channels == 2
        root = env.server.root
        original = read_all(root / row.path)[1]
        settings = dataclasses.replace(env.server.settings, archive_after_days=0)
        report = archive_sweep(catalog, settings, datetime.now(UTC), fmt=fmt)
        assert [o.result for o in report.outcomes] == ["archived"]
        rec = catalog.get(row.id)
        assert rec is not None and rec.path.endswith(f".{fmt}")
        assert rec.sha256 == sha256_file(root / rec.path)
    finally:
        await alice.close()
        await bob.close()
        await stop_env(env)
    found = layout(root / rec.path)
    assert (found.channels, found.sample_rate, found.frames) == (2, 8000, len(original))
    decoded = read_all(root / rec.path)[1]
    assert decoded.shape == original.shape
    if fmt == "flac":
        np.testing.assert_array_equal(decoded, original)
    else:
        for side in (0, 1):  # each voice stays on its side, loud where it was loud
            ref, got = loudness(original[:, side]), loudness(decoded[:, side])
            assert np.sqrt(np.mean((ref - got) ** 2)) / np.sqrt(np.mean(ref**2)) < 0.2
    # The mono mix beside it (a companion) is left as it was.
    companions = row.extra.get("companions", [])
    for companion in companions:
        assert (root / companion["path"]).is_file()
