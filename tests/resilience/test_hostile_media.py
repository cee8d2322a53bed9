"""Hostile RTP on a session's port, from the phone's own address: counted, survived, and the
real stream's audio is unharmed (equal, sample for sample, to FFmpeg's decode)."""

from __future__ import annotations

import struct

import numpy as np

from callrec.rtp.packet import RtpPacket
from callrec.service import Service
from callrec.sim.phone import PhoneCall
from tests.support.data import encoded
from tests.support.ffmpeg import ffmpeg_samples, needs_ffmpeg
from tests.support.recording import only_recording, read_recording
from tests.support.rtp import rtp_packets
from tests.support.waiting import wait_catalogued, wait_received


def hostile_datagrams(i: int, real: RtpPacket) -> list[bytes]:
    """A different kind of attack after each real packet, all from the phone's address."""
    base = real.serialize()
    kinds = [
        b"\x40" + base[1:],  # wrong version
        base[:7],  # truncated header
        bytes([0x8F]) + base[1:12] + b"\x00" * 8,  # 15 CSRCs announced, 2 present
        bytes([0xA0]) + base[1:12] + b"\x00\x00\xff",  # padding longer than the packet
        bytes([0x90]) + base[1:12] + struct.pack("!HH", 0xBEDE, 5000),  # huge extension
        # same SSRC, timestamp hours ahead, sequence far ahead: a wild packet
        RtpPacket(payload_type=8, sequence_number=(real.sequence_number + 20000) % 65536,
                  timestamp=(real.timestamp + 8000 * 3600 * 5) % (1 << 32), ssrc=real.ssrc,
                  payload=b"\x00" * 160).serialize(),
        # SSRC flapping: single packets from ever new SSRCs
        RtpPacket(payload_type=8, sequence_number=i, timestamp=i * 160, ssrc=0xF000 + i,
                  payload=b"\x55" * 160).serialize(),
        # another payload type on the same SSRC (telephone-event), and RTCP
        RtpPacket(payload_type=101, sequence_number=real.sequence_number,
                  timestamp=real.timestamp, ssrc=real.ssrc,
                  payload=b"\x01\x0a\x00\xa0").serialize(),
        b"\x81\xc9\x00\x07" + bytes(28),
        b"",
        bytes(range(256)) * 5,
    ]  # fmt: skip
    return [kinds[i % len(kinds)]]


@needs_ffmpeg
async def test_hostile_rtp_from_the_peer_address(server: Service) -> None:
    codec = "PCMA"
    # Start near the wrap of both sequence and timestamp, as a long call would be.
    packets = rtp_packets(codec, encoded(codec), seq0=65500, ts0=(1 << 32) - 4000)
    call = PhoneCall("127.0.0.1", server.control_port, session_id="hm", codec=codec)
    assert (await call.start())["result"] == "success"
    stream: list[bytes] = []
    hostile = 0
    for i, p in enumerate(packets):
        stream.append(p.serialize())
        extra = hostile_datagrams(i, p)
        stream.extend(extra)
        hostile += len(extra)
    await call.send_packets(stream, realtime=False)
    await wait_received(server, "hm", len(stream))
    assert (await call.stop())["result"] == "success"
    await call.close()
    await wait_catalogued(server)  # record first: the row follows the answer
    rec = only_recording(server)
    samples, _ = read_recording(server, rec.id)
    np.testing.assert_array_equal(samples, ffmpeg_samples(codec, encoded(codec)))
    assert rec.packets_lost == 0 and rec.ssrc_changes == 0
    assert rec.packets_received == len(packets) + hostile
    refused = rec.packets_malformed + rec.packets_other + rec.packets_foreign + rec.packets_late
    assert refused == hostile
