"""End to end on loopback: two test phones register, call through callrec, talk, record.

The phones send real-time RTP (20 ms packets of the committed A-law test signal) both ways;
the caller sends ``INFO Record: on`` / ``off``, later the callee does; the recordings must
hold the caller's audio on the left, the callee's on the right, sample for sample equal to
FFmpeg's reference decode, at the right offsets.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from callrec.catalog import RecordingInfo
from callrec.codecs import get_codec
from tests.sip.ua import TestPhone, play
from tests.support.data import CODEC_DATA
from tests.support.rtp import EVENT_PT, alaw_packets, rtp_packets
from tests.support.sip import SipEnv, start_env, stop_env
from tests.support.waiting import wait_idle, wait_received

PACKET = 160  # samples (and A-law bytes) per 20 ms packet
#: Caller packets replaced by an RFC 4733 telephone-event (a DTMF "5") while recording.
DTMF_PACKETS = range(52, 57)


def alaw_signal() -> tuple[bytes, np.ndarray]:
    """4 s of A-law (the 2 s test signal twice) and FFmpeg's decode of it."""
    data = (CODEC_DATA / "signal.alaw").read_bytes()
    ref = np.frombuffer((CODEC_DATA / "signal.alaw.ffmpeg.s16le").read_bytes(), "<i2")
    return data * 2, np.concatenate([ref, ref])


def read_stereo(root: Path, rec: RecordingInfo) -> np.ndarray:
    with wave.open(str(root / rec.path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        frames = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return frames.reshape(-1, 2)


def read_mono(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        return np.frombuffer(w.readframes(w.getnframes()), "<i2")


def locate(channel: np.ndarray, reference: np.ndarray, near: int) -> tuple[int, int]:
    """(first sample of audio in the channel, index of the reference packet it starts with).

    The reference repeats, so of the packets that match, the one nearest ``near`` is taken.
    """
    nonzero = np.flatnonzero(channel)
    assert nonzero.size, "channel is silent"
    start = int(nonzero[0])
    head = channel[start : start + PACKET]
    matches = [
        k
        for k in range(len(reference) // PACKET)
        if np.array_equal(reference[k * PACKET : (k + 1) * PACKET], head)
    ]
    assert matches, "channel audio is not the reference signal"
    return start, min(matches, key=lambda k: abs(k - near))


def check_channel(
    channel: np.ndarray, reference: np.ndarray, *, near: int, gaps: range = range(0)
) -> tuple[int, int]:
    """The channel holds the reference from some packet on, exactly (zeros where ``gaps``)."""
    start, k = locate(channel, reference, near)
    expected = reference.copy()
    for i in gaps:
        expected[i * PACKET : (i + 1) * PACKET] = 0
    body = channel[start:]
    # Trailing padding (the other channel ran longer) is silence.
    audio_end = int(np.flatnonzero(body)[-1]) + 1
    assert audio_end <= len(expected) - k * PACKET
    diff = np.flatnonzero(body[:audio_end] != expected[k * PACKET : k * PACKET + audio_end])
    assert not diff.size, f"{diff.size} samples differ, first at {diff[:5]}"
    assert not body[audio_end:].any()
    return start, k


async def test_call_with_two_record_segments(tmp_path: Path) -> None:
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
        response = await alice.invite("bob")
        assert response.status == 200
        await answering
        assert alice.call is not None and bob.call is not None
        # Both phones send to callrec's relay, not to each other.
        assert alice.call.remote_rtp != ("127.0.0.1", bob.rtp_port)
        assert bob.call.remote_rtp != ("127.0.0.1", alice.rtp_port)

        data, ref = alaw_signal()
        rev = data[::-1]
        ref_rev = ref[::-1].copy()
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.1
        talk = [
            asyncio.create_task(
                play(alice, alaw_packets(data, ssrc=0xA11CE, events=DTMF_PACKETS), start=t0)
            ),
            asyncio.create_task(play(bob, alaw_packets(rev, ssrc=0xB0B), start=t0)),
        ]

        async def at(t: float) -> None:  # the call's script: what happens when
            await asyncio.sleep(max(0.0, t0 + t - loop.time()))

        await at(0.6)
        assert (await alice.info_record("on")).status == 200
        await at(1.8)
        assert (await alice.info_record("off")).status == 200
        assert (await alice.info_record("off")).status == 200  # idempotent
        await at(2.2)
        assert (await bob.info_record("on")).status == 200
        await at(3.4)
        bye = await alice.bye()
        assert bye.status == 200
        await bob.wait_bye()
        for task in talk:
            task.cancel()
        await asyncio.gather(*talk, return_exceptions=True)
        await wait_idle(env.server)  # both segments finished (the second is known to be open)

        rows = sorted(env.server.catalog.find(limit=10), key=lambda r: r.id)
        assert [r.status for r in rows] == ["complete", "complete"]
        assert [r.stop_reason for r in rows] == ["record_off", "hangup"]
        for n, row in enumerate(rows, 1):
            assert (row.source, row.channels, row.codec, row.sample_rate) == (
                "sip",
                2,
                "PCMA",
                8000,
            )
            assert row.direction == "out"
            assert (row.local_number, row.remote_number) == ("alice", "bob")
            assert row.extra["sip"]["segment"] == n
            assert row.extra["sip"]["left"] == "caller"
        seg1, seg2 = rows
        assert seg1.extra["sip"]["trigger"] == "info"
        assert seg1.packets_other >= len(DTMF_PACKETS)  # telephone-event: counted, not audio
        # Segment lengths follow the INFOs (1.2 s and 1.2 s), within a packet or two.
        assert seg1.duration == pytest.approx(1.2, abs=0.1)
        assert seg2.duration == pytest.approx(1.2, abs=0.15)

        for row, near in ((seg1, 30), (seg2, 110)):
            stereo = read_stereo(env.server.root, row)
            left, right = stereo[:, 0], stereo[:, 1]
            l_start, l_k = check_channel(left, ref, near=near, gaps=DTMF_PACKETS)
            r_start, r_k = check_channel(right, ref_rev, near=near)
            # Both phones sent packet i at t0 + 20 ms * i: the channels line up within 20 ms.
            assert abs((l_start - l_k * PACKET) - (r_start - r_k * PACKET)) <= PACKET
            # Audio starts with the first packet after Record: on, not seconds later.
            assert l_start < 3 * PACKET and r_start < 3 * PACKET
            mix = read_mono(env.server.root / row.extra["sip"]["mix"])
            expected = np.clip(left.astype(np.int32) + right, -32768, 32767)
            assert np.array_equal(mix, expected)
        # Bob heard the telephone-event packets: relayed, not swallowed.
        events = [p for p, _ in bob.rtp_received if p.payload_type == EVENT_PT]
        assert len(events) == len(DTMF_PACKETS)
        assert len([p for p, _ in alice.rtp_received if p.payload_type == 8]) > 100
    finally:
        await alice.close()
        await bob.close()
        await stop_env(env)


@pytest.mark.parametrize(
    ("codec", "pt", "file", "rate"),
    [("PCMU", 0, "signal.ulaw", 8000), ("G722", 9, "signal.g722", 16000)],
)
async def test_each_codec_recorded_from_the_answer(
    tmp_path: Path, codec: str, pt: int, file: str, rate: int
) -> None:
    """Policy always: the whole call, from before the first packet, so even G.722's stateful
    decoder sees each stream from its start and the channels equal a decode of what was sent."""
    env = await start_env(tmp_path)
    alice = TestPhone("alice", "pw", env.address)
    bob = TestPhone("bob", "pw", env.address)
    try:
        await env.add_account("alice", "pw", policy="always")
        await env.add_account("bob", "pw")
        for phone in (alice, bob):
            await phone.start()
            assert (await phone.register()).status == 200
        answering = asyncio.create_task(bob.answer_call(codecs=(pt,)))
        assert (await alice.invite("bob", codecs=(pt, 8))).status == 200
        await answering
        data = (CODEC_DATA / file).read_bytes()[: 50 * PACKET]  # 1 s: 160 bytes every 20 ms
        rev = data[::-1]
        # Numbered from 0; G.722's RTP clock is 8 kHz too: the timestamp steps by 160.
        caller = rtp_packets(codec, data, ssrc=1, seq0=0, ts0=0)
        callee = rtp_packets(codec, rev, ssrc=2, seq0=0, ts0=0)
        assert {p.payload_type for p in caller} == {pt}

        start = asyncio.get_running_loop().time() + 0.05
        await asyncio.gather(play(alice, caller, start=start), play(bob, callee, start=start))
        await wait_received(env.server, None, len(caller) + len(callee))
        assert (await bob.bye()).status == 200
        await alice.wait_bye()
        await wait_idle(env.server)  # the recording (open: it counted the packets) finished
        (rec,) = env.server.catalog.find()
        assert (rec.codec, rec.sample_rate, rec.channels) == (codec, rate, 2)
        assert (rec.extra["sip"]["trigger"], rec.stop_reason) == ("always", "hangup")
        with wave.open(str(env.server.root / rec.path), "rb") as w:
            assert w.getframerate() == rate
            frames = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
        c = get_codec(codec)
        for channel, payload in ((0, data), (1, rev)):
            want = np.frombuffer(c.decoder().decode(payload), "<i2")
            got = frames[:, channel]
            start_at = int(np.flatnonzero(got)[0])
            # The leading silence is the time to the first packet: well under 100 ms.
            assert start_at < 0.1 * rate
            body = got[start_at : start_at + len(want)]
            first = int(np.flatnonzero(want)[0])
            assert np.array_equal(body[: len(want) - first], want[first:])
    finally:
        await alice.close()
        await bob.close()
        await stop_env(env)
