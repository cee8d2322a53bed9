"""Listening live to a SIP call being recorded: both parties, in stereo (left the caller,
right the callee), byte for byte the recording's stereo WAV."""

from __future__ import annotations

import asyncio
from pathlib import Path

from callrec.media.wav import HEADER_SIZE
from callrec.web.security import hash_password, new_api_token
from tests.sip.ua import TestPhone, play
from tests.support.data import CODEC_DATA
from tests.support.listening import Heard, hear, listening
from tests.support.rtp import alaw_packets
from tests.support.sip import SipEnv, start_env, stop_env
from tests.support.waiting import wait_for, wait_idle


async def test_a_sip_call_is_heard_in_stereo(tmp_path: Path) -> None:
    env: SipEnv = await start_env(tmp_path, web_enabled=True, web_host="127.0.0.1", web_port=0)
    alice = TestPhone("alice", "alice-pw", env.address)
    bob = TestPhone("bob", "bob-pw", env.address)
    try:
        catalog = env.server.catalog
        user = catalog.create_user(
            "boss", password_hash=hash_password("boss-password"), role="admin"
        )
        token, token_hash, prefix = new_api_token()
        catalog.create_token(user.id, name="ws", token_hash=token_hash, prefix=prefix)
        await env.add_account("alice", "alice-pw")
        await env.add_account("bob", "bob-pw")
        for phone in (alice, bob):
            await phone.start()
            assert (await phone.register()).status == 200
        answering = asyncio.create_task(bob.answer_call())
        assert (await alice.invite("bob")).status == 200
        await answering
        data = (CODEC_DATA / "signal.alaw").read_bytes() * 2  # 4 s
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.1
        talk = [
            asyncio.create_task(play(alice, alaw_packets(data, ssrc=0xA11CE), start=t0)),
            asyncio.create_task(play(bob, alaw_packets(data[::-1], ssrc=0xB0B), start=t0)),
        ]
        await asyncio.sleep(0.4)
        assert (await alice.info_record("on")).status == 200
        live = await wait_for(
            lambda: next(iter(env.server.live.live_sessions()), None), what="the SIP recording"
        )
        assert env.server.web is not None
        async with listening(env.server.web.url, live.uid, token=token) as ws:
            reading = asyncio.create_task(hear(ws, Heard()))
            await asyncio.sleep(max(0.0, t0 + 3.0 - loop.time()))
            assert (await alice.bye()).status == 200
            await bob.wait_bye()
            heard = await asyncio.wait_for(reading, 15)
        for task in talk:
            task.cancel()
        await asyncio.gather(*talk, return_exceptions=True)
        await wait_idle(env.server)
        (row,) = catalog.find(limit=10)
        assert row.source == "sip" and row.channels == 2
    finally:
        await alice.close()
        await bob.close()
        await stop_env(env)
    assert heard.start["channels"] == 2 and heard.start["sample_rate"] == 8000
    assert heard.ended
    first, pcm = heard.contiguous()
    wav = (env.server.root / row.path).read_bytes()[HEADER_SIZE:]
    assert pcm == wav[first * 4 :]
    assert len(pcm) >= 8000 * 4  # more than a second of both channels
