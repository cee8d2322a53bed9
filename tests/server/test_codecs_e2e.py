"""G.726, G.729 and G.723.1 as phones send them, recorded end to end over sockets and
compared sample by sample with FFmpeg's decoding of the same payloads (issue 13 item 11).

The references are the committed FFmpeg decodings (``tests/data/codecs``); the codec tests
check them against a live ``ffmpeg`` where one is installed."""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt
import pytest

from callrec.rtp.packet import RtpPacket
from callrec.service import Service
from tests.support.data import CODEC_DATA
from tests.support.recording import only_recording, read_recording, record
from tests.support.rtp import EVENT_PT, rtp_packets


def ffmpeg_reference(filename: str) -> npt.NDArray[np.int16]:
    return np.frombuffer((CODEC_DATA / f"{filename}.ffmpeg.s16le").read_bytes(), "<i2")


@pytest.mark.parametrize(
    ("spelling", "payload_type"),
    [("G726-32", 2), ("g726_32", 112), ("G726", 96)],
    ids=["pt2", "pt112", "pt96-bare-name"],
)
async def test_g726_32_on_the_phones_payload_type(
    server: Service, spelling: str, payload_type: int
) -> None:
    """G.726 has no static type: the phone's (RFC 1890's 2, or any dynamic one) is taken,
    and a telephone-event before the audio is not mistaken for it."""
    data = (CODEC_DATA / "signal.g726-32").read_bytes()
    packets = rtp_packets("G726-32", data, packet_bytes=80, payload_type=payload_type)
    event = RtpPacket(
        payload_type=EVENT_PT,
        sequence_number=packets[0].sequence_number - 1,
        timestamp=packets[0].timestamp,
        ssrc=packets[0].ssrc,
        payload=bytes([5, 10, 0, 160]),
    )
    await record(server, spelling, [event, *packets], session_id=f"g726{payload_type}")

    rec = only_recording(server)
    samples, rate = read_recording(server, rec.id)
    assert (rec.codec, rate) == ("G726-32", 8000)
    np.testing.assert_array_equal(samples, ffmpeg_reference("signal.g726-32"))
    assert rec.duration == pytest.approx(2.0)
    assert rec.packets_lost == 0 and rec.packets_other == 1


async def test_g729_with_a_sid_frame_and_silence_suppression(server: Service) -> None:
    """G.729B: a payload ends with a 2-byte SID frame, then nothing is sent for 200 ms. The
    speech frames are FFmpeg's decoding; the SID frame and the pause are silence in place."""
    data = (CODEC_DATA / "noise.g729").read_bytes()
    packets = rtp_packets("G729", data, packet_bytes=20, payload_type=18)  # 200 x 20 ms
    sid_at, resume_at = 49, 60  # packet 49 carries a SID; 50-59 are not sent
    with_sid = packets[sid_at]
    packets[sid_at] = RtpPacket(
        payload_type=18,
        sequence_number=with_sid.sequence_number,
        timestamp=with_sid.timestamp,
        ssrc=with_sid.ssrc,
        payload=with_sid.payload[:10] + bytes([0x5A, 0xC0]),  # one speech frame, one SID
    )
    resumed = [
        RtpPacket(
            payload_type=18,
            sequence_number=(with_sid.sequence_number + 1 + k) % 65536,
            timestamp=p.timestamp,
            ssrc=p.ssrc,
            payload=p.payload,
            marker=k == 0,
        )
        for k, p in enumerate(packets[resume_at:])
    ]
    await record(server, "G729A", [*packets[: sid_at + 1], *resumed], session_id="g729b")

    rec = only_recording(server)
    samples, rate = read_recording(server, rec.id)
    assert (rec.codec, rate) == ("G729", 8000)
    # FFmpeg decodes the frames the phone sent, in order, through one decoder.
    frames = [p.payload for p in packets[:sid_at]] + [with_sid.payload[:10]]
    frames += [p.payload for p in packets[resume_at:]]
    sent = b"".join(frames)
    speech = np.frombuffer(_ffmpeg_decode_g729(sent), "<i2")
    start = 160 * sid_at + 80
    assert len(samples) == 160 * len(packets)
    np.testing.assert_array_equal(samples[:start], speech[:start])
    assert not samples[start : 160 * resume_at].any()
    np.testing.assert_array_equal(samples[160 * resume_at :], speech[start:])
    assert rec.packets_lost == 0


async def test_g723_in_30ms_packets(server: Service) -> None:
    data = (CODEC_DATA / "signal.g723").read_bytes()
    packets = rtp_packets("G723", data, packet_bytes=24, payload_type=4)

    await record(server, "G723.1", packets, session_id="g7231")

    rec = only_recording(server)
    samples, rate = read_recording(server, rec.id)
    assert (rec.codec, rate) == ("G723", 8000)
    np.testing.assert_array_equal(samples, ffmpeg_reference("signal.g723"))
    assert rec.duration == pytest.approx(len(packets) * 0.03)


def _ffmpeg_decode_g729(frames: bytes) -> bytes:
    """FFmpeg's G.729 decoder (PyAV's) over 10-byte frames, one packet each."""
    context = av.CodecContext.create("g729", "r")
    assert isinstance(context, av.AudioCodecContext)
    context.sample_rate, context.layout = 8000, "mono"
    return b"".join(
        f.to_ndarray().astype("<i2").tobytes()
        for i in range(0, len(frames), 10)
        for f in context.decode(av.Packet(frames[i : i + 10]))
    )
