"""Regenerate the codec reference data under tests/data/codecs/.

Run from the repository root with the project's venv and FFmpeg on PATH::

    .venv/bin/python tools/make_codec_testdata.py

It makes a deterministic 2-second test signal at 8 and 16 kHz, encodes it with OUR encoders
(``signal.alaw``, ``signal.ulaw``, ``signal.g722``), adds every G.711 code byte once
(``codes.alaw``, ``codes.ulaw``) and seeded random bytes as G.722 (``noise.g722``), then has
FFmpeg decode each of those files to ``<file>.ffmpeg.s16le``: the references our decoders must
match byte for byte. The input signal itself is not kept; the tests need only the encoded bytes
and FFmpeg's decoding of them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from callrec.codecs import G722, PCMA, PCMU, Codec

DATA_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "codecs"
SECONDS = 2
SEED = 20240611

#: FFmpeg's raw demuxer and its input options for each of our file suffixes. The G.711
#: demuxers default to 44.1 kHz, so the rate must be given; the G.722 demuxer is fixed at 16 kHz.
FFMPEG_INPUT = {
    ".alaw": ["-f", "alaw", "-ar", "8000", "-ac", "1"],
    ".ulaw": ["-f", "mulaw", "-ar", "8000", "-ac", "1"],
    ".g722": ["-f", "g722"],
}


def make_signal(sample_rate: int) -> npt.NDArray[np.int16]:
    """Tones, a chirp to near Nyquist and seeded noise, swelling from -60 dBFS to clipping.

    The swell walks through every G.711 segment; the clipped last quarter second drives the
    G.722 predictors into saturation.
    """
    t = np.arange(SECONDS * sample_rate) / sample_rate
    tones = sum(np.sin(2 * np.pi * f * t) for f in (300.0, 1000.0, 0.4 * sample_rate))
    top = 0.45 * sample_rate
    chirp = np.sin(2 * np.pi * (50.0 * t + (top - 50.0) * t**2 / (2 * SECONDS)))
    noise = np.random.default_rng(SEED).normal(0.0, 0.5, t.size)
    mix = (tones + chirp + noise) / 4.5
    swell = 10 ** (-3 + 3.2 * t / SECONDS)  # -60 dB to +4 dB, so the end clips
    return np.clip(np.round(mix * swell * 32767), -32768, 32767).astype(np.int16)


def ffmpeg_decode(path: Path) -> bytes:
    """Return FFmpeg's decoding of a raw encoded file as s16le PCM, at the codec's own rate."""
    command = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        *FFMPEG_INPUT[path.suffix],
        "-i",
        str(path),
        "-f",
        "s16le",
        "-c:a",
        "pcm_s16le",
        "-",
    ]
    print(" ".join(command), file=sys.stderr)
    return subprocess.run(command, capture_output=True, check=True).stdout


def encode(codec: Codec, samples: npt.NDArray[np.int16]) -> bytes:
    return codec.encoder().encode(samples.astype("<i2").tobytes())


def main() -> None:
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg is required to make the reference files")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    encoded = {
        "signal.alaw": encode(PCMA, make_signal(PCMA.sample_rate)),
        "signal.ulaw": encode(PCMU, make_signal(PCMU.sample_rate)),
        "signal.g722": encode(G722, make_signal(G722.sample_rate)),
        "codes.alaw": bytes(range(256)),
        "codes.ulaw": bytes(range(256)),
        "noise.g722": np.random.default_rng(SEED).bytes(4000),
    }
    for name, data in encoded.items():
        path = DATA_DIR / name
        path.write_bytes(data)
        reference = path.with_name(name + ".ffmpeg.s16le")
        reference.write_bytes(ffmpeg_decode(path))
        for written in (path, reference):
            print(f"{written.relative_to(DATA_DIR)}: {written.stat().st_size} bytes")


if __name__ == "__main__":
    main()
