"""Recordings read back from WAV, FLAC and Ogg Opus (issue 16, part 4): the layout from the
headers, and the audio at the recording's own rate, of exactly its length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from callrec.engine.archive import encoding_for
from callrec.media.decode import AudioFileError, container_of, layout, pcm_blocks, read_all
from callrec.media.encode import encode_file
from callrec.media.wav import WavWriter


def signal(frames: int, rate: int, channels: int) -> np.ndarray:
    t = np.arange(frames) / rate
    sides = [
        3000 * np.sin(2 * np.pi * (300 + 250 * c) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
        for c in range(channels)
    ]
    return np.stack(sides, axis=1).astype(np.int16)


def write(path: Path, pcm: np.ndarray, rate: int) -> Path:
    channels = pcm.shape[1]
    if path.suffix == ".wav":
        with WavWriter(path, sample_rate=rate, channels=channels) as writer:
            writer.write(pcm.reshape(-1).astype("<i2").tobytes())
        return path
    encoding = encoding_for(path.suffix[1:], opus_bitrate=20000, channels=channels)
    encode_file([pcm.reshape(-1)], path, encoding=encoding, sample_rate=rate, channels=channels)
    return path


@pytest.mark.parametrize("frames", [1, 7, 959, 160_001])
@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (16000, 2), (16000, 1), (8000, 2)])
@pytest.mark.parametrize("suffix", [".wav", ".flac", ".opus"])
def test_exact_length_at_the_recordings_rate(
    tmp_path: Path, suffix: str, rate: int, channels: int, frames: int
) -> None:
    pcm = signal(frames, rate, channels)
    path = write(tmp_path / f"x{suffix}", pcm, rate)
    found = layout(path)
    assert (found.container, found.sample_rate, found.channels, found.frames) == (
        suffix[1:],
        rate,
        channels,
        frames,
    )
    assert found.duration == frames / rate
    _, decoded = read_all(path)
    assert decoded.shape == pcm.shape
    if suffix != ".opus":
        np.testing.assert_array_equal(decoded, pcm)


def test_blocks_come_a_piece_at_a_time(tmp_path: Path) -> None:
    pcm = signal(10 * 8000 * 60, 8000, 1)  # ten minutes
    path = write(tmp_path / "long.flac", pcm, 8000)
    _, blocks = pcm_blocks(path)
    sizes = [len(b) for b in blocks]
    assert sum(sizes) == len(pcm) and max(sizes) <= 64 * 1024 * 2


def test_what_is_not_a_recording(tmp_path: Path) -> None:
    for name, data, message in (
        ("a.flac", b"not flac at all" * 10, "is not a FLAC file"),
        ("a.opus", b"OggS" + bytes(100), "is not an Ogg Opus file"),
        ("a.wav", b"RIFX" + bytes(40), "is not a WAV file"),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(AudioFileError, match=message):
            layout(path)
    assert container_of(Path("x.FLAC")) == "flac" and container_of(Path("x.mp3")) == "wav"
