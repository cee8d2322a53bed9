"""SIP calls on networks as they are (issue 13 items 6 and 10).

A dual-stack server (``sip_host = "::"``, ``media_host = "::"``) takes IPv4 phones over UDP
and TCP, and their call is recorded exactly: the phones' addresses are the plain IPv4 ones
their SDP names, so their RTP is relayed and recorded, not counted foreign. A burst larger
than the relay socket's queue is counted as the segment's kernel drops."""

from __future__ import annotations

import asyncio
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from callrec.codecs import get_codec
from tests.sip.ua import TestPhone, play
from tests.support.data import CODEC_DATA
from tests.support.net import needs_ipv6
from tests.support.rtp import rtp_packets
from tests.support.sip import start_env, stop_env
from tests.support.waiting import wait_for, wait_idle, wait_received

PACKET = 160


@needs_ipv6
async def test_an_ipv4_sip_call_through_a_dual_stack_server_is_recorded(tmp_path: Path) -> None:
    env = await start_env(tmp_path, sip_host="::", media_host="::")
    alice = TestPhone("alice", "pw", env.address)  # 127.0.0.1: IPv4 phones
    bob = TestPhone("bob", "pw", env.address)
    try:
        await env.add_account("alice", "pw", policy="always")
        await env.add_account("bob", "pw")
        for phone in (alice, bob):
            await phone.start()
            assert (await phone.register()).status == 200
        answering = asyncio.create_task(bob.answer_call(codecs=(8,)))
        assert (await alice.invite("bob", codecs=(8,))).status == 200
        await answering
        data = (CODEC_DATA / "signal.alaw").read_bytes()[: 50 * PACKET]
        rev = data[::-1]
        caller = rtp_packets("PCMA", data, ssrc=1, seq0=0, ts0=0)
        callee = rtp_packets("PCMA", rev, ssrc=2, seq0=0, ts0=0)
        start = asyncio.get_running_loop().time() + 0.05
        await asyncio.gather(play(alice, caller, start=start), play(bob, callee, start=start))
        await wait_received(env.server, None, len(caller) + len(callee))
        assert (await bob.bye()).status == 200
        await alice.wait_bye()
        await wait_idle(env.server)
        (rec,) = env.server.catalog.find()
        assert rec.packets_foreign == 0 and rec.stop_reason == "hangup"
        # Relayed both ways, as to any IPv4 phone.
        assert len(alice.rtp_received) == len(callee) and len(bob.rtp_received) == len(caller)
        with wave.open(str(env.server.root / rec.path), "rb") as w:
            frames = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
        for channel, payload in ((0, data), (1, rev)):
            want = np.frombuffer(get_codec("PCMA").decoder().decode(payload), "<i2")
            got = frames[:, channel]
            start_at = int(np.flatnonzero(got)[0])
            first = int(np.flatnonzero(want)[0])
            body = got[start_at : start_at + len(want) - first]
            assert np.array_equal(body, want[first:])
    finally:
        await alice.close()
        await bob.close()
        await stop_env(env)


@needs_ipv6
async def test_sip_over_tcp_on_a_dual_stack_server_answers_ipv4_and_ipv6(tmp_path: Path) -> None:
    env = await start_env(tmp_path, sip_host="::")
    try:
        port = env.sip.tcp_port
        assert port is not None
        for host in ("127.0.0.1", "::1"):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                (
                    f"OPTIONS sip:callrec@{'[::1]' if host == '::1' else host} SIP/2.0\r\n"
                    "Via: SIP/2.0/TCP client.invalid;branch=z9hG4bKdual1\r\n"
                    "Max-Forwards: 70\r\nFrom: <sip:t@client.invalid>;tag=1\r\n"
                    "To: <sip:callrec@client.invalid>\r\nCall-ID: dual-stack-1\r\n"
                    "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                ).encode()
            )
            status = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            assert status.startswith(b"SIP/2.0 "), (host, status)
    finally:
        await stop_env(env)


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the kernel's drop count is Linux's"
)
async def test_a_burst_into_the_relay_counts_kernel_drops(tmp_path: Path) -> None:
    env = await start_env(tmp_path, media_rcvbuf=4096)
    alice = TestPhone("alice", "pw", env.address)
    bob = TestPhone("bob", "pw", env.address)
    try:
        await env.add_account("alice", "pw", policy="always")
        await env.add_account("bob", "pw")
        for phone in (alice, bob):
            await phone.start()
            assert (await phone.register()).status == 200
        answering = asyncio.create_task(bob.answer_call(codecs=(8,)))
        assert (await alice.invite("bob", codecs=(8,))).status == 200
        await answering
        await wait_for(lambda: env.server.live.live_sessions(), what="the SIP recording to be open")
        data = (CODEC_DATA / "signal.alaw").read_bytes()
        burst = rtp_packets("PCMA", data, ssrc=1, seq0=0, ts0=0)
        for packet in burst:  # no await: the server's loop reads nothing meanwhile
            alice.send_rtp(packet)

        def accounted() -> int:
            (live,) = env.server.live.live_sessions()
            return live.counters["received"] + live.counters["kernel_dropped"]

        # Loopback loses nothing on the way: each packet is received or dropped at the queue.
        await wait_for(lambda: accounted() == len(burst), what="every packet accounted for")
        assert (await bob.bye()).status == 200
        await alice.wait_bye()
        await wait_idle(env.server)
        (rec,) = env.server.catalog.find()
        assert rec.packets_kernel_dropped > 0
        assert rec.packets_received + rec.packets_kernel_dropped == len(burst)
    finally:
        await alice.close()
        await bob.close()
        await stop_env(env)
