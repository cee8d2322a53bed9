"""RTP as real phones send it, recorded end to end over sockets and compared sample by sample
with FFmpeg's decoding of the same payloads (issue 13: items 7-9)."""

from __future__ import annotations

import numpy as np

from callrec.rtp.packet import RtpPacket
from callrec.service import Service
from tests.support.data import encoded
from tests.support.ffmpeg import ffmpeg_samples, needs_ffmpeg
from tests.support.recording import only_recording, read_recording, record
from tests.support.rtp import PACKET_BYTES, rtp_packets


def restamped(packets: list[RtpPacket], ticks: int) -> list[RtpPacket]:
    """The same packets with timestamps ``ticks`` apart."""
    ts0 = packets[0].timestamp
    return [
        RtpPacket(
            payload_type=p.payload_type,
            sequence_number=p.sequence_number,
            timestamp=(ts0 + i * ticks) % (1 << 32),
            ssrc=p.ssrc,
            payload=p.payload,
        )
        for i, p in enumerate(packets)
    ]


@needs_ffmpeg
async def test_g722_stamped_with_a_16khz_clock_records_at_its_true_length(
    server: Service,
) -> None:
    """Item 7: 320 ticks per 20 ms packet (the RFC says 160); 4 s must stay 4 s."""
    data = encoded("G722")
    packets = restamped(rtp_packets("G722", data), 320)
    await record(server, "G722", packets, session_id="g722clk")
    rec = only_recording(server)
    samples, rate = read_recording(server, rec.id)
    assert rate == 16000
    np.testing.assert_array_equal(samples, ffmpeg_samples("G722", data))
    assert rec.duration == len(packets) * 0.02
    assert rec.packets_lost == 0
    assert rec.clock_changes == 1  # counted in the stream stats, kept on the row


@needs_ffmpeg
async def test_first_two_packets_swapped(server: Service) -> None:
    """Item 8: the true first packet arrives second and still opens the recording."""
    data = encoded("PCMA")
    packets = rtp_packets("PCMA", data)
    await record(server, "PCMA", [packets[1], packets[0], *packets[2:]], session_id="swap")
    rec = only_recording(server)
    samples, _ = read_recording(server, rec.id)
    np.testing.assert_array_equal(samples, ffmpeg_samples("PCMA", data))
    assert (rec.packets_late, rec.packets_lost) == (0, 0)


@needs_ffmpeg
async def test_comfort_noise_is_silence_and_not_loss(server: Service) -> None:
    """Item 9: silence suppression: packets 10-19 are not sent; one CN packet takes sequence
    number 10, and the audio resumes at sequence 11 with the timestamp of packet 20."""
    data = encoded("PCMA")
    packets = rtp_packets("PCMA", data)
    first, rest = packets[:10], packets[20:]
    cn = RtpPacket(
        payload_type=13,
        sequence_number=packets[10].sequence_number,
        timestamp=packets[10].timestamp,
        ssrc=packets[10].ssrc,
        payload=b"\x4e",  # noise level -78 dBov (RFC 3389)
    )
    resumed = [
        RtpPacket(
            payload_type=p.payload_type,
            sequence_number=(packets[11].sequence_number + k) % 65536,
            timestamp=p.timestamp,
            ssrc=p.ssrc,
            payload=p.payload,
        )
        for k, p in enumerate(rest)
    ]
    await record(server, "PCMA", [*first, cn, *resumed], session_id="cng")
    rec = only_recording(server)
    samples, _ = read_recording(server, rec.id)
    reference = ffmpeg_samples("PCMA", data).copy()
    reference[10 * PACKET_BYTES : 20 * PACKET_BYTES] = 0
    np.testing.assert_array_equal(samples, reference)
    assert rec.packets_lost == 0 and rec.packets_other == 1
