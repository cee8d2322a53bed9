"""What decoding costs per codec: microseconds of CPU per 20 ms of audio, and per call.

Each codec decodes the committed test payloads (``tests/data/codecs``) one payload at a time
through one decoder per stream, as :func:`callrec.server.source.render` and the SIP recorder
do for frame codecs; concatenable codecs are also timed as ``render`` feeds them, a run of
``--batch`` payloads joined into one call. G.723.1 packets hold 30 ms: its cost is scaled to
20 ms so the figures compare. The per-payload figure is what a loop would spend per packet.

    .venv/bin/python benchmarks/codec_cost.py [--seconds 2] [--repeat 5] [--batch 10]

Prints one line per codec: the median over ``--repeat`` runs of process CPU time per 20 ms
packet (one payload a call, then joined runs where the codec allows), and how many live
streams (50 packets a second) one core could decode at the one-payload rate. Two more G.722
lines time the decoders callrec's own was measured against, on the same payloads in the
same run: libg722's (callrec's before issue 20) and FFmpeg's through PyAV.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import av
import G722 as libg722
import numpy as np

from callrec.codecs import Decoder, get_codec

CODEC_DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "codecs"

#: Codec -> (committed encoded file, bytes of one payload, milliseconds it holds).
PAYLOADS = {
    "PCMA": ("signal.alaw", 160, 20),
    "PCMU": ("signal.ulaw", 160, 20),
    "G722": ("signal.g722", 160, 20),
    "G726-16": ("signal.g726-16", 40, 20),
    "G726-24": ("signal.g726-24", 60, 20),
    "G726-32": ("signal.g726-32", 80, 20),
    "G726-40": ("signal.g726-40", 100, 20),
    "AAL2-G726-32": ("signal.aal2-g726-32", 80, 20),
    "G729": ("noise.g729", 20, 20),
    "G723": ("signal.g723", 24, 30),
}


def payloads(name: str, seconds: float) -> tuple[list[bytes], int]:
    filename, size, ms = PAYLOADS[name]
    data = (CODEC_DATA / filename).read_bytes()
    data = data[: len(data) - len(data) % size]
    one_pass = [data[i : i + size] for i in range(0, len(data), size)]
    wanted = max(1, round(seconds * 1000 / ms))
    out: list[bytes] = []
    while len(out) < wanted:
        out.extend(one_pass)
    return out[:wanted], ms


class LibG722Decoder(Decoder):
    """libg722's decoder as callrec used it (bytes in, native ``array('h')`` out)."""

    def __init__(self) -> None:
        self._state = libg722.G722(16000, 64000)

    def decode(self, payload: bytes) -> bytes:
        samples = self._state.decode(bytes(payload))
        return np.frombuffer(samples, dtype=np.int16).astype("<i2", copy=False).tobytes()


class FfmpegG722Decoder(Decoder):
    """FFmpeg's G.722 decoder, one codec context per stream."""

    def __init__(self) -> None:
        ctx = av.CodecContext.create("g722", "r")
        assert isinstance(ctx, av.AudioCodecContext)
        ctx.sample_rate = 16000
        ctx.layout = "mono"
        ctx.open()
        self._ctx = ctx

    def decode(self, payload: bytes) -> bytes:
        frames = self._ctx.decode(av.Packet(payload))
        return b"".join(bytes(f.planes[0])[: f.samples * 2] for f in frames)


#: Line -> (codec whose payloads it decodes, the decoder of one stream).
LINES: dict[str, tuple[str, Callable[[], Decoder]]] = {
    name: (name, get_codec(name).decoder) for name in PAYLOADS
}
LINES["G722-libg722"] = ("G722", LibG722Decoder)
LINES["G722-ffmpeg"] = ("G722", FfmpegG722Decoder)


def time_decode(make: Callable[[], Decoder], items: list[bytes]) -> float:
    decoder = make()
    begin = time.process_time()
    for item in items:
        decoder.decode(item)
    return time.process_time() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per codec (median)")
    parser.add_argument("--batch", type=int, default=10, help="payloads per joined call")
    args = parser.parse_args()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'codec':<14}{'us/20ms':>10}{'batched':>10}{'streams/core':>14}")
    for name, (codec_name, make) in LINES.items():
        codec = get_codec(codec_name)
        items, ms = payloads(codec_name, args.seconds)
        per_20ms = 20 / ms
        single = statistics.median(time_decode(make, items) for _ in range(args.repeat))
        us = single / len(items) * 1e6 * per_20ms
        batched = ""
        if codec.concatenable:
            runs = [b"".join(items[i : i + args.batch]) for i in range(0, len(items), args.batch)]
            joined = statistics.median(time_decode(make, runs) for _ in range(args.repeat))
            batched = f"{joined / len(items) * 1e6 * per_20ms:10.2f}"
        streams = 1e6 / us / (1000 / 20) if us else float("inf")
        print(f"{name:<14}{us:10.2f}{batched:>10}{streams:14.0f}")


if __name__ == "__main__":
    main()
