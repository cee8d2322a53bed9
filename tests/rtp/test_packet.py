from __future__ import annotations

import struct

import pytest

from callrec.exceptions import RtpError
from callrec.rtp.packet import RtpPacket, is_rtcp
from callrec.rtp.sequence import SequenceExtender, seq_delta, ts_delta


def test_minimal_round_trip() -> None:
    p = RtpPacket(
        payload_type=8, sequence_number=1, timestamp=160, ssrc=0xDEADBEEF, payload=b"\xd5" * 160
    )
    data = p.serialize()
    assert data[:2] == b"\x80\x08"
    assert len(data) == 172
    assert RtpPacket.parse(data) == p
    assert RtpPacket.parse(data).serialize() == data


def test_full_header_round_trip() -> None:
    p = RtpPacket(
        payload_type=9,
        marker=True,
        sequence_number=65535,
        timestamp=0xFFFFFFFF,
        ssrc=1,
        csrc=(2, 3, 4),
        extension_profile=0xBEDE,
        extension=b"\x10\xaa\x00\x00",
        payload=b"abc",
        padding_size=5,
    )
    data = p.serialize()
    parsed = RtpPacket.parse(data)
    assert parsed == p
    assert parsed.payload == b"abc"
    assert parsed.serialize() == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x08\x00", "shorter than its 12-byte header"),
        (b"\x40\x08" + bytes(10), "version 1, not 2"),
        (b"\x8f\x08" + bytes(10) + bytes(8), "truncated CSRC"),
        (b"\x90\x08" + bytes(10) + b"\xbe\xde", "truncated header extension"),
        (
            b"\x90\x08" + bytes(10) + b"\xbe\xde\x00\x05" + bytes(4),
            "truncated header extension (5 words)",
        ),
        (b"\xa0\x08" + bytes(10), "padding flag but no payload"),
        (b"\xa0\x08" + bytes(10) + b"ab\x09", "invalid padding length 9"),
        (b"\xa0\x08" + bytes(10) + b"ab\x00", "invalid padding length 0"),
    ],
)
def test_malformed_packets(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RtpPacket.parse(data)


def test_rtcp_is_recognised() -> None:
    sender_report = struct.pack("!BBH", 0x80, 200, 6) + bytes(24)
    assert is_rtcp(sender_report)
    assert not is_rtcp(
        RtpPacket(payload_type=8, sequence_number=0, timestamp=0, ssrc=0).serialize()
    )
    # A marker bit on PT 72 would look like RTCP type 200: RFC 5761 forbids such PTs for RTP.
    assert is_rtcp(b"\x80\xc8" + bytes(10))


def test_sequence_arithmetic() -> None:
    assert seq_delta(0, 65535) == 1
    assert seq_delta(65535, 0) == -1
    assert ts_delta(5, 0xFFFFFFFF) == 6
    ext = SequenceExtender()
    assert [ext.extend(s) for s in (65534, 65535, 0, 65535, 1)] == [
        65534,
        65535,
        65536,
        65535,
        65537,
    ]
