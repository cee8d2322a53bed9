"""Checking an archive copy against the WAV it was made from (issue 16, part 4): it
decodes to the same rate, channels and exact number of frames; FLAC to the very same
samples; Opus (lossy) to the same sound at the same time.

Both files are read block by block (:mod:`callrec.media.decode`): a six-hour call is checked
in a few megabytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np

from callrec.exceptions import CallrecError
from callrec.media.decode import FLAC_FORMAT, AudioLayout, layout, pcm_blocks
from callrec.media.encode import Samples

#: Opus: the 20 ms loudness of the copy may differ from the WAV's by this much (RMS of the
#: difference over RMS of the WAV's; speech at 16-24 kbit/s: 0.05-0.1, white noise 0.3, a
#: copy of other audio or shifted by a syllable about 1)...
MAX_ENVELOPE_ERROR: Final = 0.5
#: ...and where the loudness varies (speech: syllables), follow it this closely.
MIN_ENVELOPE_CORRELATION: Final = 0.9
#: Loudness that varies by less than this (standard deviation over mean) is steady: a tone
#: or noise, whose correlation says nothing.
STEADY: Final = 0.2
#: Recordings quieter than this (RMS of int16 samples) are silence: nothing to compare.
QUIET_RMS: Final = 30.0


class VerifyError(CallrecError):
    """The copy does not decode to the WAV (its length, its samples, its sound)."""


def verify_copy(wav: Path, source: AudioLayout, copy: Path, fmt: str) -> None:
    """The copy decodes to the WAV's rate, channels and exact length; FLAC to the very same
    samples, Opus to the same sound at the same time."""
    found = layout(copy)
    if (found.sample_rate, found.channels, found.frames) != (
        source.sample_rate,
        source.channels,
        source.frames,
    ):
        raise VerifyError(
            f"the {fmt} copy says {found.frames} frames of {found.channels} channels at "
            f"{found.sample_rate} Hz, the WAV {source.frames} of {source.channels} at "
            f"{source.sample_rate} Hz"
        )
    _, original = pcm_blocks(wav)
    _, decoded = pcm_blocks(copy)
    if fmt == FLAC_FORMAT:
        _compare_exact(original, decoded, source.frames * source.channels)
    else:
        _compare_envelope(original, decoded, source)


def _compare_exact(a: Iterator[Samples], b: Iterator[Samples], total: int) -> None:
    left_a = _Reader(a)
    left_b = _Reader(b)
    seen = 0
    while True:
        x = left_a.take(1 << 16)
        y = left_b.take(len(x) if len(x) else 1 << 16)
        if len(x) != len(y):
            raise VerifyError(f"the FLAC copy decodes to a different length (at sample {seen})")
        if not len(x):
            break
        if not np.array_equal(x, y):
            at = seen + int(np.argmax(x != y))
            raise VerifyError(f"the FLAC copy differs from the WAV at sample {at}")
        seen += len(x)
    if seen != total:
        raise VerifyError(f"the FLAC copy decodes to {seen} samples, the WAV holds {total}")


class _Reader:
    """Takes samples from a block iterator in pieces of any size."""

    def __init__(self, blocks: Iterator[Samples]) -> None:
        self._blocks = blocks
        self._pending: Samples = np.zeros(0, dtype=np.int16)

    def take(self, count: int) -> Samples:
        while len(self._pending) < count:
            block = next(self._blocks, None)
            if block is None:
                break
            self._pending = np.concatenate((self._pending, block))
        out, self._pending = self._pending[:count], self._pending[count:]
        return out


def _loudness(blocks: Iterator[Samples], channels: int, window: int) -> np.ndarray[Any, Any]:
    """RMS of each ``window`` frames, per channel: (windows, channels)."""
    reader = _Reader(blocks)
    out: list[np.ndarray[Any, Any]] = []
    step = window * channels * 256
    while len(piece := reader.take(step)):
        usable = len(piece) // (window * channels) * window * channels
        if not usable:
            break
        frames = piece[:usable].astype(np.float64).reshape(-1, window, channels)
        out.append(np.sqrt(np.mean(frames**2, axis=1)))
    return np.concatenate(out) if out else np.zeros((0, channels))


def _compare_envelope(a: Iterator[Samples], b: Iterator[Samples], source: AudioLayout) -> None:
    window = max(1, source.sample_rate // 50)
    ref = _loudness(a, source.channels, window)
    got = _loudness(b, source.channels, window)
    if ref.shape != got.shape:
        raise VerifyError("the Opus copy decodes to a different length")
    for channel in range(source.channels):
        r, g = ref[:, channel], got[:, channel]
        level = float(np.sqrt(np.mean(r**2))) if len(r) else 0.0
        if level < QUIET_RMS:
            continue  # silence (or nothing): no envelope to follow
        error = float(np.sqrt(np.mean((r - g) ** 2))) / level
        if not error <= MAX_ENVELOPE_ERROR:
            raise VerifyError(
                f"the Opus copy does not sound like the WAV on channel {channel + 1} "
                f"(loudness differs by {error:.2f} > {MAX_ENVELOPE_ERROR})"
            )
        if len(r) < 2 or np.std(r) / np.mean(r) < STEADY or np.std(g) == 0:
            continue
        match = float(np.corrcoef(r, g)[0, 1])
        if not match >= MIN_ENVELOPE_CORRELATION:
            raise VerifyError(
                f"the Opus copy does not follow the WAV on channel {channel + 1} "
                f"(loudness correlation {match:.3f} < {MIN_ENVELOPE_CORRELATION})"
            )
