"""What a FLAC, Opus or MP3 download costs the server (issue 15): seconds of CPU per minute
of call, time to the first piece, and the most Python memory the encode held at once (tracemalloc:
FFmpeg's own buffers are not counted; they are per encoder, not per file).

A speech-like WAV of ``--minutes`` minutes (8 kHz mono, as a G.711 call, or 16 kHz with
``--rate 16000``) is transcoded by the web server's own path (``callrec.web.media.transcode``,
PyAV's encoders in-process) and the pieces are thrown away as a client would take them.
Every run is printed.

    .venv/bin/python benchmarks/transcode.py
    .venv/bin/python benchmarks/transcode.py --minutes 60 --runs 3 --rate 16000
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import soundfile

from callrec.web.media import FORMATS, transcode


def speech_like(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    noise = np.random.default_rng(15).normal(0, 200, len(t))
    return np.clip(6000 * voice * envelope + noise, -32768, 32767).astype(np.int16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=8000, choices=(8000, 16000))
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "call.wav"
        soundfile.write(wav, speech_like(args.minutes * 60, args.rate), args.rate, "PCM_16")
        print(f"{args.minutes:g} min at {args.rate} Hz mono, {wav.stat().st_size} bytes of WAV")
        print("format  run  cpu_s  wall_s  x_realtime  first_piece_ms  pieces  bytes  peak_py_MB")
        for name in ("flac", "opus", "mp3"):
            for run in range(1, args.runs + 1):
                tracemalloc.start()
                cpu0, wall0 = time.process_time(), time.perf_counter()
                pieces = transcode(wav, FORMATS[name])
                first = next(pieces)
                first_ms = (time.perf_counter() - wall0) * 1000
                count, size = 1, len(first)
                for piece in pieces:
                    count += 1
                    size += len(piece)
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                print(
                    f"{name:6}  {run:3}  {cpu:5.2f}  {wall:6.2f}  {args.minutes * 60 / wall:10.0f}"
                    f"  {first_ms:14.1f}  {count:6}  {size:5}  {peak / 1e6:11.2f}"
                )


if __name__ == "__main__":
    main()
