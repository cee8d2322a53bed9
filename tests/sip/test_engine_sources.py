"""SIP calls are recordings of the one engine: its admission answers, its writes off the event
loop, its batches, its stop reasons, and the live view and metrics, as for phone sessions.

Real SIP over loopback between two test phones and `callrec serve`'s Service, with the phone
front end beside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from callrec.rtp.packet import RtpPacket
from callrec.sim.phone import PhoneCall
from callrec.web.security import new_api_token
from tests.sip.ua import TestPhone, play
from tests.support.sip import SipEnv, start_env, stop_env
from tests.support.threads import flush_threads
from tests.support.waiting import wait_for, wait_idle

PACKET = 160


def tone_packets(count: int, ssrc: int) -> list[RtpPacket]:
    return [
        RtpPacket(
            payload_type=8,
            sequence_number=i,
            timestamp=i * PACKET,
            ssrc=ssrc,
            payload=bytes([0x55 ^ (i & 0x0F)]) * PACKET,
        )
        for i in range(count)
    ]


class Call:
    """alice calls bob through callrec; both send RTP until :meth:`hang_up`."""

    def __init__(self, env: SipEnv) -> None:
        self.env = env
        self.alice = TestPhone("alice", "pw", env.address)
        self.bob = TestPhone("bob", "pw", env.address)
        self._talk: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for phone in (self.alice, self.bob):
            await phone.start()
            assert (await phone.register()).status == 200
        answering = asyncio.create_task(self.bob.answer_call())
        assert (await self.alice.invite("bob")).status == 200
        await answering
        start = asyncio.get_running_loop().time() + 0.02
        self._talk = [
            asyncio.create_task(play(self.alice, tone_packets(500, 1), start=start)),
            asyncio.create_task(play(self.bob, tone_packets(500, 2), start=start)),
        ]

    async def hang_up(self) -> None:
        assert (await self.alice.bye()).status == 200
        await self.bob.wait_bye()

    async def close(self) -> None:
        for task in self._talk:
            task.cancel()
        await asyncio.gather(*self._talk, return_exceptions=True)
        await self.alice.close()
        await self.bob.close()


@pytest.fixture
async def call_in(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[tuple[SipEnv, Call]] = []

    async def make(**overrides: object) -> tuple[SipEnv, Call]:
        env = await start_env(tmp_path / f"env{len(made)}", **overrides)
        await env.add_account("alice", "pw")
        await env.add_account("bob", "pw")
        call = Call(env)
        made.append((env, call))
        await call.start()
        return env, call

    yield make
    for env, call in made:
        await call.close()
        await stop_env(env)


async def test_a_full_engine_answers_record_on_with_503_busy(call_in: Any) -> None:
    env, call = await call_in(max_sessions=1)
    # A phone records the one session allowed.
    phone = PhoneCall("127.0.0.1", env.server.control_port, session_id="p1", codec="PCMA")
    assert (await phone.start())["result"] == "success"
    refused = await call.alice.info_record("on")
    assert refused.status == 503
    assert refused.header("Warning") == '399 callrec "recording refused: busy"'
    assert env.server.catalog.count(status="recording") == 1  # only the phone's
    assert (await phone.stop())["result"] == "success"
    await phone.close()
    await wait_idle(env.server)
    # The place is free again: the next Record: on records.
    assert (await call.alice.info_record("on")).status == 200
    await call.hang_up()
    await wait_idle(env.server)
    sip = env.server.catalog.find(limit=10)
    assert sorted((r.source, r.stop_reason) for r in sip) == [
        ("server", "phone_stop"),
        ("sip", "hangup"),
    ]


async def test_under_the_disk_reserve_record_on_is_503_disk_full(call_in: Any) -> None:
    env, call = await call_in(disk_reserve_bytes=1 << 62)
    refused = await call.alice.info_record("on")
    assert refused.status == 503 and "disk_full" in (refused.header("Warning") or "")
    assert env.server.catalog.count() == 0
    # The phone front end gives the same answer.
    phone = PhoneCall("127.0.0.1", env.server.control_port, session_id="p2", codec="PCMA")
    answer = await phone.start()
    assert (answer["result"], answer["reason"]) == ("failed", "disk_full")
    await phone.close()


async def test_sip_audio_is_flushed_off_the_loop_and_catalogued_in_batches(
    call_in: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = flush_threads(monkeypatch)
    env, call = await call_in(sync_interval=0.05)
    journal = env.server.journal
    before = journal.status().applied
    assert (await call.alice.info_record("on")).status == 200
    await wait_for(lambda: len(threads) >= 6, what="a few ticks of flushes")
    assert (await call.alice.info_record("off")).status == 200
    await wait_idle(env.server)
    assert threads and all(name.startswith("media-io") for name in threads), set(threads)
    # The row's creation, checkpoints and finish went through the journal's batches.
    assert journal.status().applied >= before + 2
    (row,) = env.server.catalog.find()
    assert row.status == "complete" and row.stop_reason == "record_off"
    (row,) = env.server.catalog.find()
    assert (row.source, row.status, row.stop_reason) == ("sip", "complete", "record_off")
    assert row.packets_received > 0


async def test_max_duration_ends_a_sip_segment_and_the_next_record_on_starts_one(
    call_in: Any,
) -> None:
    env, call = await call_in(max_duration=0.3)
    assert (await call.alice.info_record("on")).status == 200
    await wait_idle(env.server)  # the engine ended it on its own
    (first,) = env.server.catalog.find()
    assert (first.stop_reason, first.extra["sip"]["segment"]) == ("max_duration", 1)
    # The SIP core heard of it: a new Record: on records a new segment.
    assert (await call.alice.info_record("on")).status == 200
    await wait_idle(env.server)
    segments = sorted(r.extra["sip"]["segment"] for r in env.server.catalog.find())
    assert segments == [1, 2]


async def test_sip_calls_show_on_the_live_page_and_in_the_metrics(call_in: Any) -> None:
    env, call = await call_in(web_enabled=True, web_host="127.0.0.1", web_port=0)
    server = env.server
    assert server.web is not None
    user = server.catalog.create_user("auditor", password_hash="x", role="admin")
    token, token_hash, prefix = new_api_token()
    server.catalog.create_token(user.id, name="t", token_hash=token_hash, prefix=prefix)
    assert (await call.alice.info_record("on")).status == 200
    async with httpx.AsyncClient(
        base_url=server.web.url, headers={"authorization": f"Bearer {token}"}
    ) as client:
        (live,) = (await client.get("/api/v1/live")).json()
        assert (live["source"], live["local_number"], live["remote_number"]) == (
            "sip",
            "alice",
            "bob",
        )
        assert live["direction"] == "out" and live["codec"] == "PCMA"
        metrics = (await client.get("/metrics")).text
        assert "callrec_sessions_active 1.0" in metrics
        assert "callrec_sessions_total 1.0" in metrics
        await call.hang_up()
        await wait_idle(server)
        assert (await client.get("/api/v1/live")).json() == []
        metrics = (await client.get("/metrics")).text
        assert "callrec_sessions_active 0.0" in metrics
        received = next(
            line for line in metrics.splitlines() if line.startswith("callrec_packets_received")
        )
        assert float(received.split()[-1]) > 0
