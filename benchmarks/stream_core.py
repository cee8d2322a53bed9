"""CPU cost per packet of the receive path without sockets: parse, reorder, decode, buffer.

As the server does it: every datagram into the stream core, and every 25 packets (a sync
tick) what it released is decoded in one call per run of payloads and appended once.

Prints microseconds per 20 ms packet for each codec, and the share a 3,000-call load
(150,000 packets/s) would take of one core. Figures only: compare them within one run.

    .venv/bin/python benchmarks/stream_core.py [--packets N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from callrec.codecs import get_codec
from callrec.rtp.packet import RtpPacket
from callrec.rtp.stream import MediaStream
from callrec.server.source import render


def build(codec_name: str, count: int) -> list[bytes]:
    codec = get_codec(codec_name)
    rate = codec.sample_rate
    t = np.arange(rate // 50 * count) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()
    enc = codec.encoder()
    step = 2 * rate // 50
    out = []
    ts = 0
    for i in range(count):
        payload = enc.encode(pcm[i * step : (i + 1) * step])
        out.append(
            RtpPacket(
                payload_type=codec.payload_type,
                sequence_number=i % 65536,
                timestamp=ts % (1 << 32),
                ssrc=1,
                payload=payload,
            ).serialize()
        )
        ts += codec.timestamp_units(len(payload))
    return out


def run(codec_name: str, packets: list[bytes]) -> float:
    codec = get_codec(codec_name)
    stream = MediaStream(
        payload_type=codec.payload_type,
        clock_rate=codec.clock_rate,
        timestamp_units=codec.timestamp_units,
        peer_ip="127.0.0.1",
    )
    decoder = codec.decoder()
    sink = bytearray()
    start = time.perf_counter()
    for i, data in enumerate(packets):
        stream.receive(data, "127.0.0.1", i * 0.02)
        if i % 25 == 24:  # the server pumps each session once per sync tick
            sink += b"".join(render(stream.pop_pieces(), codec, decoder))
    stream.flush(1e9, everything=True)
    sink += b"".join(render(stream.pop_pieces(), codec, decoder))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=50_000)
    args = parser.parse_args()
    print(f"{'codec':6} {'us/packet':>10} {'core share at 150k pkt/s':>26}")
    for name in ("PCMA", "PCMU", "G722"):
        packets = build(name, args.packets)
        best = min(run(name, packets) for _ in range(3))
        per_packet = best / len(packets) * 1e6
        print(f"{name:6} {per_packet:10.2f} {per_packet * 150_000 / 1e6 * 100:25.0f}%")


if __name__ == "__main__":
    main()
