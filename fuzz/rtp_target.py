"""Fuzz the RTP packet parser and the per-stream reorder/loss/timing core."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from callrec.exceptions import RtpError
    from callrec.rtp.packet import RtpPacket
    from callrec.rtp.stream import MediaStream


def test_one_input(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        pass
    else:
        assert RtpPacket.parse(packet.serialize()) == packet
    stream = MediaStream(
        payload_type=8, clock_rate=8000, timestamp_units=lambda n: n, peer_ip="127.0.0.1"
    )
    fdp = atheris.FuzzedDataProvider(data)
    now = 0.0
    while fdp.remaining_bytes():
        datagram = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200))
        now += fdp.ConsumeIntInRange(0, 3000) / 1000
        stream.receive(datagram, "127.0.0.1", now)
        stream.flush(now)
    stream.flush(now, everything=True)
    stream.pop_output()


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
