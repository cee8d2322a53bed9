"""Helpers shared by the phone-local (USB) file tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from callrec.codecs import Codec

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "localfile"

FFPROBE = shutil.which("ffprobe")
needs_ffprobe = pytest.mark.skipif(
    FFPROBE is None, reason="ffprobe (FFmpeg) is not installed; `make sysdeps` installs it"
)


def tone(codec: Codec, seconds: float) -> npt.NDArray[np.int16]:
    """A deterministic two-tone signal at the codec's rate."""
    rate = codec.sample_rate
    t = np.arange(round(seconds * rate)) / rate
    signal = 6000 * np.sin(2 * np.pi * 440 * t) + 2500 * np.sin(2 * np.pi * 1930 * t)
    return np.round(signal).astype(np.int16)


def decode_payloads(codec: Codec, payloads: list[bytes]) -> bytes:
    """What one fresh decoder makes of ``payloads`` in order: what a reader must produce."""
    decoder = codec.decoder()
    return b"".join(decoder.decode(p) for p in payloads)


def ffprobe(path: Path) -> dict[str, Any]:
    """Codec, rate, channels and duration of the first audio stream, as FFmpeg sees them."""
    assert FFPROBE is not None
    out = subprocess.run(
        [
            FFPROBE, "-v", "error", "-select_streams", "a:0",
            "-show_entries", "stream=codec_name,sample_rate,channels:format=duration,format_name",
            "-of", "json", str(path),
        ],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    data = json.loads(out)
    stream = data["streams"][0]
    return {
        "codec": stream["codec_name"],
        "sample_rate": int(stream["sample_rate"]),
        "channels": int(stream["channels"]),
        "duration": float(data["format"]["duration"]),
        "format": data["format"]["format_name"],
    }
