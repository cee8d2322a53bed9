"""What every transcription engine takes and gives: the small interface of the package.

An engine is loaded once (its model read), then given one track at a time: 16-bit mono PCM
and its rate; it returns the words it heard, each with start and end in seconds from the
track's start and a confidence from 0 to 1. No files, no catalogue: the job
(:mod:`callrec.jobs.transcription`) reads the recording and stores the words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np

from callrec.exceptions import CallrecError

#: What the engines listen at (pocketsphinx's en-US model and Whisper are 16 kHz models).
ENGINE_RATE: Final = 16000

Samples = np.ndarray[Any, np.dtype[np.int16]]


class TranscribeError(CallrecError):
    """An engine that cannot be loaded (not installed, a missing or broken model directory, a
    language it has no model for) or a track it could not transcribe."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Word:
    """One word an engine heard."""

    text: str
    #: Seconds from the start of the track.
    start: float
    end: float
    #: 0-1: how sure the engine is (its posterior, or the mean token probability).
    confidence: float

    def __post_init__(self) -> None:
        if not self.text or not 0 <= self.start <= self.end:
            raise ValueError(f"a word needs text and 0 <= start <= end, got {self!r}")

    def shifted(self, seconds: float) -> Word:
        """The same word, ``seconds`` later (a segment's words put on the track's time line)."""
        return Word(
            text=self.text,
            start=self.start + seconds,
            end=self.end + seconds,
            confidence=self.confidence,
        )


class Engine(Protocol):
    """A loaded speech recogniser."""

    #: ``pocketsphinx``, ``faster-whisper``.
    name: str
    #: The language it transcribes, as the settings name it.
    language: str

    def transcribe(self, samples: Samples, rate: int) -> list[Word]:
        """The words said in one track of mono 16-bit PCM at ``rate`` Hz, in time order."""
        ...


def resample(samples: Samples, rate: int, target: int = ENGINE_RATE) -> Samples:
    """``samples`` at ``target`` Hz. Going down, a windowed-sinc low-pass first keeps what is
    above the new Nyquist frequency from folding into speech; going up (8 kHz telephony),
    linear interpolation is enough for a recogniser."""
    if rate == target or samples.size == 0:
        return samples
    if rate <= 0:
        raise TranscribeError(f"cannot resample audio at {rate} Hz")
    x = samples.astype(np.float64)
    if rate > target:
        cutoff = 0.5 * target / rate  # cycles per input sample
        taps = np.arange(-32, 33)
        kernel = 2 * cutoff * np.sinc(2 * cutoff * taps) * np.hamming(taps.size)
        x = np.convolve(x, kernel / kernel.sum(), mode="same")
    count = round(x.size * target / rate)
    positions = np.arange(count) * (rate / target)
    out = np.interp(positions, np.arange(x.size), x)
    clipped: Samples = np.clip(np.rint(out), -32768, 32767).astype(np.int16)
    return clipped
