"""The stereo recorder core: two RTP directions on one clock, with fixed timing patterns."""

from __future__ import annotations

import numpy as np

from callrec.codecs import G722, PCMA
from callrec.rtp.packet import RtpPacket
from callrec.sip.recorder import CALLEE, CALLER, StereoRecorder, StereoTimeline


def pcm(value: int, n: int) -> bytes:
    return np.full(n, value, "<i2").tobytes()


def frames(stereo: bytes) -> np.ndarray:
    return np.frombuffer(stereo, "<i2").reshape(-1, 2)


def test_timeline_aligns_channels_on_the_clock() -> None:
    tl = StereoTimeline(sample_rate=8000, origin=100.0)
    tl.first_audio(CALLER, 100.010)  # 80 samples after Record: on
    tl.audio(CALLER, pcm(1, 160))
    tl.first_audio(CALLEE, 100.030)  # 240 samples after
    tl.audio(CALLEE, pcm(2, 160))
    stereo, mono = tl.pop()
    f = frames(stereo)
    assert len(f) == 240  # as far as both channels go
    assert not f[:80, 0].any() and (f[80:240, 0] == 1).all()
    assert not f[:240, 1].any()
    assert (np.frombuffer(mono, "<i2") == f[:, 0] + f[:, 1]).all()
    stereo, _ = tl.finish()
    f = frames(stereo)
    assert len(f) == 160  # the rest of the callee's packet; the caller padded to match
    assert (f[:, 1] == 2).all() and (f[:, 0] == 0).all()


def test_silent_channel_is_padded_and_padding_pays_for_the_gap() -> None:
    tl = StereoTimeline(sample_rate=8000, origin=0.0, lag=1.0)
    tl.first_audio(CALLER, 0.0)
    tl.first_audio(CALLEE, 0.0)
    for _ in range(150):  # 3 s of caller audio; the callee says nothing after 20 ms
        tl.audio(CALLER, pcm(1, 160))
    tl.audio(CALLEE, pcm(2, 160))
    tl.keep_up(3.0)  # the callee is padded up to 2 s (lag 1 s)
    stereo, _ = tl.pop()
    assert len(frames(stereo)) == 16000
    # The callee comes back at 3 s; its stream core saw a 2.98 s gap (RTP timestamps).
    tl.silence(CALLEE, 23840)
    tl.audio(CALLEE, pcm(3, 160))
    stereo, _ = tl.finish()
    f = frames(stereo)
    right = np.concatenate([np.full(160, 2), np.zeros(23840), np.full(160, 3)])
    assert tl.length(CALLEE) == len(right)  # not 2 s longer: the padding was the gap
    assert (f[:, 1] == right[16000:]).all()


def test_clip_in_the_mix() -> None:
    tl = StereoTimeline(sample_rate=8000, origin=0.0)
    tl.audio(CALLER, pcm(30000, 10))
    tl.audio(CALLEE, pcm(30000, 10))
    _, mono = tl.pop()
    assert (np.frombuffer(mono, "<i2") == 32767).all()


def packets(codec_pt: int, payloads: list[bytes], *, ssrc: int, ts_step: int) -> list[bytes]:
    return [
        RtpPacket(
            payload_type=codec_pt, sequence_number=i, timestamp=i * ts_step, ssrc=ssrc, payload=p
        ).serialize()
        for i, p in enumerate(payloads)
    ]


def test_recorder_reorders_each_direction_and_ignores_events() -> None:
    rec = StereoRecorder(codec=PCMA, payload_type=8, origin=0.0, reorder_window=3)
    enc = PCMA.encoder()
    left = [enc.encode(pcm(1000 * (i + 1), 160)) for i in range(6)]
    right = [enc.encode(pcm(-1000 * (i + 1), 160)) for i in range(6)]
    lp = packets(8, left, ssrc=1, ts_step=160)
    rp = packets(8, right, ssrc=2, ts_step=160)
    order = [0, 2, 1, 3, 5, 4]  # fixed reordering
    event = RtpPacket(
        payload_type=101, sequence_number=99, timestamp=0, ssrc=1, payload=b"\x05\x0a\x00\xa0"
    ).serialize()
    for n, i in enumerate(order):
        rec.receive(CALLER, lp[i], 0.02 * n)
        rec.receive(CALLEE, rp[i], 0.02 * n)
    rec.receive(CALLER, event, 0.13)
    first, _ = rec.pump(0.2)
    rest, _ = rec.drain()
    f = frames(first + rest)
    dec = PCMA.decoder()
    want_left = np.concatenate([np.frombuffer(dec.decode(p), "<i2") for p in left])
    want_right = np.concatenate([np.frombuffer(PCMA.decoder().decode(p), "<i2") for p in right])
    assert (f[:, 0] == want_left).all() and (f[:, 1] == want_right).all()
    counters = rec.counters()
    assert counters.received == 13 and counters.other == 1 and counters.lost == 0


def test_recorder_g722_is_16k() -> None:
    rec = StereoRecorder(codec=G722, payload_type=9, origin=0.0)
    enc = G722.encoder()
    payloads = [enc.encode(pcm(500, 320)) for _ in range(10)]
    for i, data in enumerate(packets(9, payloads, ssrc=7, ts_step=160)):
        rec.receive(CALLER, data, 0.02 * i)
    stereo, _ = rec.drain()
    assert rec.sample_rate == 16000
    assert len(frames(stereo)) == 10 * 320  # 20 ms at 16 kHz per packet
    assert not frames(stereo)[:, 1].any()
