"""FLAC, Opus and MP3 encoded in-process and streamed: every reader gets the input's length.

Each stream is read back by three decoders that share no code with the encoding side's
bookkeeping: PyAV, the FFmpeg program, and libsndfile (through soundfile; mpg123 inside it
for MP3). "Length" is the decoded sample count, the number a player plays.
"""

from __future__ import annotations

import io
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile

from callrec.media.encode import (
    FLAC,
    LAME_ENCODER_DELAY,
    MP3,
    OPUS_DOWNLOAD,
    Encoding,
    Mp3Header,
    encode_stream,
    mp3_frame_count,
)
from tests.support.ffmpeg import FFMPEG, FFPROBE, needs_ffmpeg, needs_ffprobe

FORMATS = {"flac": FLAC, "opus": OPUS_DOWNLOAD, "mp3": MP3}


def speech_like(frames: int, rate: int, channels: int) -> np.ndarray:
    """A few harmonics with a syllable-rate envelope and some noise (fixed seed)."""
    t = np.arange(frames) / rate
    rng = np.random.default_rng(15)
    out = []
    for ch in range(channels):
        f0 = 140.0 + 60 * ch
        voice = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
        envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t + ch)
        out.append(6000 * voice * envelope + rng.normal(0, 200, frames))
    return np.clip(np.stack(out, axis=1), -32768, 32767).astype(np.int16)


def blocks(signal: np.ndarray, size: int) -> Iterator[np.ndarray]:
    flat = signal.reshape(-1)
    step = size * signal.shape[1]
    for i in range(0, len(flat), step):
        yield flat[i : i + step]


def stream(signal: np.ndarray, rate: int, encoding: Encoding, block: int = 3000) -> bytes:
    return b"".join(
        encode_stream(
            blocks(signal, block),
            encoding=encoding,
            sample_rate=rate,
            channels=signal.shape[1],
            frames=len(signal),
        )
    )


def pyav_decode(data: bytes) -> tuple[np.ndarray, int]:
    with av.open(io.BytesIO(data)) as container:
        stream_ = container.streams.audio[0]
        pieces = [
            frame.to_ndarray().T
            if frame.format.is_planar
            else frame.to_ndarray().reshape(-1, len(frame.layout.channels))
            for frame in container.decode(stream_)
        ]
        rate = stream_.codec_context.sample_rate
    return np.concatenate(pieces), rate


def ffmpeg_sample_count(path: Path, channels: int) -> tuple[int, int]:
    """Samples per channel FFmpeg decodes from the file (as a user would run it: FFmpeg 5.1
    reading MP3 from a pipe trims the start but not the end, even its own files), and at
    which rate."""
    assert FFMPEG is not None
    data = path.read_bytes()
    probe = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(path), "-f", "s16le", "-ac", str(channels), "-"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    rate = 48000 if data[:4] == b"OggS" else None  # Opus decodes at 48 kHz
    return len(probe.stdout) // (2 * channels), rate or 0


def snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    noise = ref - decoded.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum(noise**2), 1e-9)))


def envelope_match(reference: np.ndarray, decoded: np.ndarray, rate: int) -> float:
    """Correlation of the 20 ms loudness of the two: the same sound at the same time."""
    window = rate // 50
    usable = len(reference) // window * window

    def loudness(x: np.ndarray) -> np.ndarray:
        return np.sqrt(np.mean(x[:usable].astype(np.float64).reshape(-1, window) ** 2, axis=1))

    return float(np.corrcoef(loudness(reference), loudness(decoded))[0, 1])


@needs_ffmpeg
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_decoder_gets_the_inputs_length(
    name: str, rate: int, channels: int, tmp_path: Path
) -> None:
    frames = 5 * rate + 1234  # not a whole number of any codec's frames
    signal = speech_like(frames, rate, channels)
    data = stream(signal, rate, FORMATS[name])
    path = tmp_path / f"x.{name}"
    path.write_bytes(data)

    # libsndfile: at the input's rate (it reads Opus's input rate from the OpusHead).
    read, sf_rate = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=True)
    assert sf_rate == rate and read.shape == (frames, channels)
    # PyAV and the FFmpeg program: Opus at 48 kHz, the others at the input's rate.
    decoded, av_rate = pyav_decode(data)
    assert len(decoded) * rate == frames * av_rate
    count, ff_rate = ffmpeg_sample_count(path, channels)
    assert count * rate == frames * (ff_rate or rate)

    if name == "flac":
        np.testing.assert_array_equal(read, signal)
    else:  # lossy, but the same sound at the same time: no delay, nothing added
        for c in range(channels):
            assert envelope_match(signal[:, c], read[:, c], rate) > 0.98
    if name == "mp3":  # waveform-matching at 64 kbit/s, and not shifted by a sample
        assert min(snr_db(signal[:, c], read[:, c]) for c in range(channels)) > 15.0


def test_flac_stream_announces_its_length() -> None:
    signal = speech_like(20_000, 8000, 1)
    data = stream(signal, 8000, FLAC)
    assert data[:4] == b"fLaC"
    # STREAMINFO's 36-bit total, which a muxer that cannot seek back leaves at 0.
    total = int.from_bytes(data[8 + 13 : 8 + 18], "big") & ((1 << 36) - 1)
    assert total == 20_000


def test_pieces_come_as_the_input_is_read() -> None:
    """Streamed: about a piece per block read, none holding much of the file."""
    signal = speech_like(60 * 8000, 8000, 1)
    for encoding in FORMATS.values():
        pieces = list(
            encode_stream(
                blocks(signal, 8000),
                encoding=encoding,
                sample_rate=8000,
                channels=1,
                frames=len(signal),
            )
        )
        total = sum(len(p) for p in pieces)
        assert len(pieces) >= 50, encoding.codec
        assert max(len(p) for p in pieces) < total / 10, encoding.codec


def _ffmpeg_seekable_mp3(signal: np.ndarray, rate: int) -> bytes:
    """What FFmpeg's muxer writes when it can seek back: the reference Info frame."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp3", options={"id3v2_version": "0"}) as container:
        s = container.add_stream("libmp3lame", rate=rate, layout="mono")
        s.bit_rate = MP3.bit_rate
        frame = av.AudioFrame.from_ndarray(signal.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        container.mux(s.encode(frame))
        container.mux(s.encode(None))
    return out.getvalue()


def _info_fields(data: bytes) -> dict[str, object]:
    head = Mp3Header.parse(data)
    at = 4 + head.side_info_size
    tag, flags, frames, size = struct.unpack_from(">4sIII", data, at)
    lame = at + 120
    delays = int.from_bytes(data[lame + 21 : lame + 24], "big")
    return {
        "tag": tag,
        "flags": flags,
        "frames": frames,
        "bytes": size,
        "encoder": data[lame : lame + 9],
        "delay": delays >> 12,
        "padding": delays & 0xFFF,
        "music_length": struct.unpack_from(">I", data, lame + 28)[0],
        "frame_size": head.frame_size(),
    }


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("frames", [8000, 12_345, 52_800, 100_003])
def test_mp3_info_frame_says_what_ffmpeg_says_when_it_can_seek(rate: int, frames: int) -> None:
    signal = speech_like(frames, rate, 1)
    ours = stream(signal, rate, MP3)
    reference = _ffmpeg_seekable_mp3(signal, rate)
    assert _info_fields(ours) == _info_fields(reference)
    assert _info_fields(ours)["delay"] == LAME_ENCODER_DELAY
    # The audio frames after the Info frame are the same bytes.
    size = Mp3Header.parse(ours).frame_size()
    assert len(ours) == len(reference) and ours[size:] == reference[size:]
    assert _info_fields(ours)["frames"] == mp3_frame_count(frames, 576)


@needs_ffprobe
@pytest.mark.parametrize("rate", [8000, 16000])
def test_ffprobe_reads_the_mp3_length_within_a_frame(rate: int, tmp_path: Path) -> None:
    """ffprobe (FFmpeg 5.1) gives the container's duration in whole frames and the skipped
    delay as start_time: what is left is the WAV's length to less than one frame."""
    assert FFPROBE is not None
    frames = 5 * rate + 1234
    path = tmp_path / "x.mp3"
    path.write_bytes(stream(speech_like(frames, rate, 1), rate, MP3))
    out = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-show_entries",
            "format=duration,start_time",
            "-of",
            "default=nw=1",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    probe = dict(line.split("=") for line in out.split())
    start, duration = float(probe["start_time"]), float(probe["duration"])
    assert start == pytest.approx((LAME_ENCODER_DELAY + 529) / rate, abs=1e-5)
    assert duration == pytest.approx(mp3_frame_count(frames, 576) * 576 / rate, abs=1e-5)
    assert 0 <= (duration - start) - frames / rate < 576 / rate


def test_mp3_info_frame_crc_is_the_lame_tags() -> None:
    data = stream(speech_like(8000, 8000, 1), 8000, MP3)
    at = 4 + Mp3Header.parse(data).side_info_size + 120 + 34
    body = bytearray(data[:190])
    body[at : at + 2] = b"\0\0"
    crc = 0
    for byte in body:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    assert struct.unpack_from(">H", data, at)[0] == crc


def test_mp3_header_parse() -> None:
    head = Mp3Header.parse(bytes.fromhex("ffe388c4"))
    assert (head.version, head.sample_rate, head.samples_per_frame) == (0, 8000, 576)
    assert head.mono and head.frame_size() == 576 and head.side_info_size == 9
    assert Mp3Header.parse(bytes.fromhex("fffb9064")).sample_rate == 44100
    with pytest.raises(Exception, match="not an MPEG layer III frame header"):
        Mp3Header.parse(b"OggS")
