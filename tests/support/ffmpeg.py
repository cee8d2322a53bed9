"""FFmpeg, the reference decoder and "standard reader" of the audio tests (and ffprobe)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None,
    reason="ffmpeg is not installed; it is the reference decoder (`make sysdeps` installs it)",
)
FFPROBE = shutil.which("ffprobe")
needs_ffprobe = pytest.mark.skipif(
    FFPROBE is None, reason="ffprobe (FFmpeg) is not installed; `make sysdeps` installs it"
)

#: FFmpeg's raw demuxer options per codec, as tools/make_codec_testdata.py uses them.
FFMPEG_INPUT = {
    "PCMA": ["-f", "alaw", "-ar", "8000", "-ac", "1"],
    "PCMU": ["-f", "mulaw", "-ar", "8000", "-ac", "1"],
    "G722": ["-f", "g722"],
    # RFC 3551 packs G.726 codes from the least significant bit: FFmpeg's "g726le".
    **{
        f"G726-{kbits}": ["-f", "g726le", "-code_size", str(bits), "-sample_rate", "8000"]
        for bits, kbits in ((2, 16), (3, 24), (4, 32), (5, 40))
    },
    "AAL2-G726-32": ["-f", "g726", "-code_size", "4", "-sample_rate", "8000"],
    "G729": ["-f", "g729"],
    "G723": ["-f", "g723_1"],
}


def run_ffmpeg(*args: str, data: bytes | None = None) -> bytes:
    """FFmpeg's standard output for ``args`` (quiet, no console input), ``data`` on its input."""
    assert FFMPEG is not None
    return subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", *args],
        input=data,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout


def ffmpeg_decode(codec: str, source: Path | bytes) -> bytes:
    """FFmpeg's decoding of raw encoded audio (a file, or the bytes themselves) as s16le PCM
    at the codec's own rate."""
    name, data = (str(source), None) if isinstance(source, Path) else ("pipe:0", source)
    args = [*FFMPEG_INPUT[codec], "-i", name, "-f", "s16le", "-c:a", "pcm_s16le", "-"]
    return run_ffmpeg(*args, data=data)


def ffmpeg_samples(codec: str, source: Path | bytes) -> npt.NDArray[np.int16]:
    """:func:`ffmpeg_decode` as int16 samples."""
    return np.frombuffer(ffmpeg_decode(codec, source), "<i2")


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
