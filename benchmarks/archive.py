"""What the archive policy (issue 16, part 4) costs and saves: transcode speed in times real
time per core, and the size of an hour of call as WAV, FLAC and Opus.

For each layout (8 kHz mono, as a G.711 phone call; 16 kHz stereo, as a G.722 SIP call with
one party per side) a speech-like call of ``--minutes`` minutes is made: voiced syllables
(harmonics of a gliding pitch under a 4 Hz envelope) with pauses, both parties taking turns,
passed through the call's own codec (our PCMA or G.722 encoder and decoder, so the WAV holds
what a real recording holds, quantisation noise included). It is written as a callrec WAV,
catalogued in a SQLite catalogue, and archived by :func:`callrec.engine.archive.transcode_one`,
the sweep's own path: claim, encode, fsync, decode back and verify, SHA-256, rename, switch.

"x real time per core" is the call's seconds over the CPU seconds of this process
(user + system, all threads) for the whole of ``transcode_one``; the encode alone is faster
(the verification decodes the copy and reads the WAV again). Every run is printed. The
audio is synthetic: real speech compresses somewhat differently under FLAC (Opus sizes are
set by the bit rate).

    .venv/bin/python benchmarks/archive.py
    .venv/bin/python benchmarks/archive.py --minutes 30 --runs 3 --opus-bitrate 16000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from callrec.catalog import Catalog, NewRecording
from callrec.codecs import get_codec
from callrec.engine.archive import transcode_one
from callrec.media.wav import WavWriter

LAYOUTS = {"8k-mono": (8000, 1, "PCMA"), "16k-stereo": (16000, 2, "G722")}


def speech_like(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Syllables of voiced speech (about 4 a second) in talk spurts with pauses."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * rate)
    t = np.arange(frames) / rate
    pitch = 120 + 40 * np.sin(2 * np.pi * 0.3 * t + seed)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k**1.2 for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.6
    spurts = np.repeat(rng.random(int(seconds) + 1) < 0.6, rate)[:frames]  # talk 60 %
    noise = rng.normal(0, 60, frames)
    return np.clip(5000 * voice * syllables * spurts + noise, -32768, 32767).astype(np.int16)


def through_codec(pcm: np.ndarray, codec_name: str) -> np.ndarray:
    codec = get_codec(codec_name)
    encoded = codec.encoder().encode(pcm.astype("<i2").tobytes())
    decoded = codec.decoder().decode(encoded)
    return np.frombuffer(decoded, dtype="<i2")[: len(pcm)].astype(np.int16)


def make_call(root: Path, name: str, seconds: float, layout: str) -> tuple[Path, int, int]:
    rate, channels, codec = LAYOUTS[layout]
    sides = [through_codec(speech_like(seconds, rate, seed), codec) for seed in range(channels)]
    if channels == 2:  # turns: each party talks while the other mostly listens
        sides[1] = np.roll(sides[1], rate)
    pcm = np.stack(sides, axis=1).reshape(-1)
    path = root / f"{name}.wav"
    writer = WavWriter(path, sample_rate=rate, channels=channels)
    for start in range(0, len(pcm), rate * channels * 10):
        writer.write(pcm[start : start + rate * channels * 10].astype("<i2").tobytes())
        writer.flush()
    info = writer.close()
    return path, info.frames, info.size_bytes


def catalogue(catalog: Catalog, path: Path, root: Path, layout: str, n: int) -> int:
    from callrec.media.wav import read_wav_info

    rate, channels, codec = LAYOUTS[layout]
    info = read_wav_info(path)
    start = datetime.now(UTC) - timedelta(days=400)
    rec_id = catalog.create_recording(
        NewRecording(
            session_id=f"bench-{n}",
            device="0c383e0e709a",
            codec=codec,
            start_time=start,
            sample_rate=rate,
            channels=channels,
            path=path.relative_to(root).as_posix(),
        )
    )
    catalog.finish_recording(
        rec_id,
        status="complete",
        stop_reason="phone_stop",
        end_time=start + timedelta(seconds=info.duration),
        duration=info.duration,
        size_bytes=info.size_bytes,
        sha256=info.sha256,
        counters=None,
    )
    return rec_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--opus-bitrate", type=int, default=20000, help="per channel")
    parser.add_argument("--layout", action="append", choices=sorted(LAYOUTS))
    args = parser.parse_args()
    seconds = args.minutes * 60
    print(
        f"{args.minutes:g} min calls, Opus {args.opus_bitrate} bit/s per channel, "
        f"{os.cpu_count()} CPUs, pid {os.getpid()}"
    )
    print(
        f"{'layout':<11} {'format':<6} {'run':>3} {'cpu s':>7} {'wall s':>7} "
        f"{'x rt/core':>9} {'WAV MB/h':>9} {'MB/h':>7} {'ratio':>6}"
    )
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "recordings"
        root.mkdir()
        with Catalog(f"sqlite:///{Path(tmp) / 'catalog.db'}") as catalog:
            catalog.migrate()
            for layout in args.layout or sorted(LAYOUTS):
                for fmt in ("flac", "opus"):
                    for run in range(1, args.runs + 1):
                        n += 1
                        path, frames, wav_size = make_call(root, f"call-{n}", seconds, layout)
                        rec_id = catalogue(catalog, path, root, layout, n)
                        cpu0, wall0 = time.process_time(), time.perf_counter()
                        outcome = transcode_one(
                            catalog,
                            root,
                            rec_id,
                            fmt=fmt,
                            opus_bitrate=args.opus_bitrate,
                            now=datetime.now(UTC),
                        )
                        cpu = time.process_time() - cpu0
                        wall = time.perf_counter() - wall0
                        assert outcome.result == "archived", outcome
                        rate = LAYOUTS[layout][0]
                        audio = frames / rate
                        per_hour = 3600 / audio / 1e6
                        print(
                            f"{layout:<11} {fmt:<6} {run:>3} {cpu:>7.2f} {wall:>7.2f} "
                            f"{audio / cpu:>9.0f} {wav_size * per_hour:>9.1f} "
                            f"{outcome.archive_bytes * per_hour:>7.1f} "
                            f"{wav_size / outcome.archive_bytes:>6.1f}",
                            flush=True,
                        )
                        (root / outcome.path).unlink()


if __name__ == "__main__":
    main()
