"""RTP packets (RFC 3550 section 5.1): parse and serialize, nothing else."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from callrec.exceptions import RtpError

RTP_VERSION = 2
HEADER_SIZE = 12
_HEADER = struct.Struct("!BBHII")

#: Payload types the phones or their peers put on the wire besides the call's codec.
PT_COMFORT_NOISE = 13  # RFC 3389
#: Dynamic payload types (RFC 3551): telephone-event (RFC 4733) is negotiated in this range.
DYNAMIC_PT = range(96, 128)


def is_rtcp(data: bytes) -> bool:
    """RTCP multiplexed on the RTP port (RFC 5761 section 4): packet types 192-223."""
    return len(data) >= 2 and data[0] >> 6 == RTP_VERSION and 192 <= data[1] <= 223


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpPacket:
    """One RTP packet; ``payload`` excludes padding, which is kept only as a size."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension: bytes = b""
    padding_size: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} out of range")
        if not 0 <= self.sequence_number <= 0xFFFF:
            raise ValueError(f"sequence number {self.sequence_number} out of range")
        if not 0 <= self.timestamp <= 0xFFFFFFFF or not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise ValueError("timestamp and ssrc are 32-bit")
        if len(self.csrc) > 15:
            raise ValueError("at most 15 CSRCs")
        if len(self.extension) % 4:
            raise ValueError("header extension length must be a multiple of 4")
        if not 0 <= self.padding_size <= 255:
            raise ValueError("padding size must be 0-255")

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < HEADER_SIZE:
            raise RtpError(f"RTP packet is {len(data)} bytes, shorter than its 12-byte header")
        first, second, seq, ts, ssrc = _HEADER.unpack_from(data)
        version = first >> 6
        if version != RTP_VERSION:
            raise RtpError(f"RTP packet has version {version}, not 2")
        has_padding = bool(first & 0x20)
        has_extension = bool(first & 0x10)
        csrc_count = first & 0x0F
        pos = HEADER_SIZE + 4 * csrc_count
        if len(data) < pos:
            raise RtpError(f"RTP packet has truncated CSRC list ({csrc_count} announced)")
        csrc = struct.unpack_from(f"!{csrc_count}I", data, HEADER_SIZE) if csrc_count else ()
        profile: int | None = None
        extension = b""
        if has_extension:
            if len(data) < pos + 4:
                raise RtpError("RTP packet has truncated header extension")
            profile, words = struct.unpack_from("!HH", data, pos)
            pos += 4
            if len(data) < pos + 4 * words:
                raise RtpError(f"RTP packet has truncated header extension ({words} words)")
            extension = data[pos : pos + 4 * words]
            pos += 4 * words
        end = len(data)
        padding = 0
        if has_padding:
            if end == pos:
                raise RtpError("RTP packet has padding flag but no payload")
            padding = data[-1]
            if padding == 0 or padding > end - pos:
                raise RtpError(f"RTP packet has invalid padding length {padding}")
            end -= padding
        return cls(
            payload_type=second & 0x7F,
            marker=bool(second & 0x80),
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            csrc=tuple(csrc),
            extension_profile=profile,
            extension=bytes(extension),
            payload=bytes(data[pos:end]),
            padding_size=padding,
        )

    def serialize(self) -> bytes:
        first = (
            RTP_VERSION << 6
            | (0x20 if self.padding_size else 0)
            | (0x10 if self.extension_profile is not None else 0)
            | len(self.csrc)
        )
        second = (0x80 if self.marker else 0) | self.payload_type
        out = bytearray(
            _HEADER.pack(first, second, self.sequence_number, self.timestamp, self.ssrc)
        )
        for c in self.csrc:
            out += struct.pack("!I", c)
        if self.extension_profile is not None:
            out += struct.pack("!HH", self.extension_profile, len(self.extension) // 4)
            out += self.extension
        out += self.payload
        if self.padding_size:
            out += bytes(self.padding_size - 1) + bytes([self.padding_size])
        return bytes(out)
