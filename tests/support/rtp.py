"""RTP packets as phones send them, built from the committed encoded signals."""

from __future__ import annotations

from callrec.codecs import get_codec
from callrec.rtp.packet import RtpPacket

#: 20 ms of PCMA/PCMU, or of G.722 at 64 kbit/s: what a phone puts in one RTP packet (and
#: the samples of 20 ms at 8 kHz).
PACKET_BYTES = 160
#: RFC 4733 telephone-event, as the SIP test phones offer it.
EVENT_PT = 101


def rtp_packets(
    codec: str,
    data: bytes,
    *,
    ssrc: int = 0x1234,
    seq0: int = 1000,
    ts0: int = 5000,
    packet_bytes: int = PACKET_BYTES,
    payload_type: int | None = None,
) -> list[RtpPacket]:
    """``data`` (encoded with ``codec``) cut into packets of ``packet_bytes`` (20 ms of
    G.711 or G.722), numbered from ``seq0`` and ``ts0`` (both wrap), of the codec's payload
    type unless ``payload_type`` is given."""
    c = get_codec(codec)
    out = []
    ts = ts0
    for i, pos in enumerate(range(0, len(data), packet_bytes)):
        payload = data[pos : pos + packet_bytes]
        out.append(
            RtpPacket(
                payload_type=c.payload_type if payload_type is None else payload_type,
                sequence_number=(seq0 + i) % 65536,
                timestamp=ts % (1 << 32),
                ssrc=ssrc,
                payload=payload,
            )
        )
        ts += c.timestamp_units(len(payload))
    return out


def alaw_packets(data: bytes, *, ssrc: int, events: range = range(0)) -> list[RtpPacket]:
    """A-law ``data`` as packets numbered from 0, whole packets only; those in ``events`` are
    replaced by one telephone-event (a DTMF "5") lasting as long as they do."""
    out = []
    for i in range(len(data) // PACKET_BYTES):
        if i in events:
            first = events.start
            duration = (i - first + 1) * PACKET_BYTES
            end = 0x80 if i == events[-1] else 0
            out.append(
                RtpPacket(
                    payload_type=EVENT_PT,
                    sequence_number=i,
                    timestamp=first * PACKET_BYTES,
                    ssrc=ssrc,
                    marker=i == first,
                    payload=bytes([5, end | 10]) + duration.to_bytes(2, "big"),
                )
            )
            continue
        out.append(
            RtpPacket(
                payload_type=8,
                sequence_number=i,
                timestamp=i * PACKET_BYTES,
                ssrc=ssrc,
                payload=data[i * PACKET_BYTES : (i + 1) * PACKET_BYTES],
            )
        )
    return out
