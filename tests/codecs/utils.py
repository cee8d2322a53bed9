"""Helpers shared by the codec tests: the committed references and FFmpeg."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from callrec.codecs import Codec

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "codecs"

#: 20 ms of PCMA/PCMU, or of G.722 at 64 kbit/s: what a phone puts in one RTP packet.
PACKET_BYTES = 160

#: Encoded file under DATA_DIR -> canonical codec name. Each has a ``<file>.ffmpeg.s16le`` twin.
REFERENCES = {
    "signal.alaw": "PCMA",
    "signal.ulaw": "PCMU",
    "signal.g722": "G722",
    "codes.alaw": "PCMA",
    "codes.ulaw": "PCMU",
    "noise.g722": "G722",
}

#: FFmpeg's raw demuxer options per codec, as tools/make_codec_testdata.py uses them.
FFMPEG_INPUT = {
    "PCMA": ["-f", "alaw", "-ar", "8000", "-ac", "1"],
    "PCMU": ["-f", "mulaw", "-ar", "8000", "-ac", "1"],
    "G722": ["-f", "g722"],
}

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None,
    reason="ffmpeg is not installed; it is the reference decoder (`make sysdeps` installs it)",
)


def ffmpeg_decode(codec_name: str, path: Path) -> bytes:
    """Return FFmpeg's decoding of a raw encoded file as s16le PCM at the codec's own rate."""
    assert FFMPEG is not None
    command = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin"]
    command += [*FFMPEG_INPUT[codec_name], "-i", str(path), "-f", "s16le", "-c:a", "pcm_s16le", "-"]
    return subprocess.run(command, capture_output=True, check=True, timeout=60).stdout


def decode_in_packets(codec: Codec, payload: bytes, packet_bytes: int = PACKET_BYTES) -> bytes:
    """Decode ``payload`` cut into packets, through one decoder, as an RTP stream arrives."""
    decoder = codec.decoder()
    chunks = (payload[i : i + packet_bytes] for i in range(0, len(payload), packet_bytes))
    return b"".join(decoder.decode(chunk) for chunk in chunks)


def encode_in_chunks(codec: Codec, pcm: bytes, chunk_samples: int) -> bytes:
    """Encode ``pcm`` cut into chunks of ``chunk_samples`` samples, through one encoder."""
    encoder = codec.encoder()
    step = 2 * chunk_samples
    return b"".join(encoder.encode(pcm[i : i + step]) for i in range(0, len(pcm), step))


def pcm(samples: npt.ArrayLike) -> bytes:
    """Return int16 little-endian PCM bytes for ``samples``."""
    return np.asarray(samples).astype("<i2").tobytes()


def samples(pcm_bytes: bytes) -> npt.NDArray[np.int64]:
    """Return PCM bytes as wide integers, so differences cannot overflow."""
    return np.frombuffer(pcm_bytes, dtype="<i2").astype(np.int64)


def snr_db(reference: npt.NDArray[np.int64], actual: npt.NDArray[np.int64]) -> float:
    noise = actual - reference
    return float(10 * np.log10(np.sum(reference**2.0) / np.sum(noise**2.0)))
