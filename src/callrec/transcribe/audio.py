"""A recording's tracks, as the engines take them: one per channel, each with its speaker.

A stereo SIP recording has the caller on the left channel and the callee on the right (see
:mod:`callrec.sip.recording`, whose ``sip.left``/``sip.right`` extra fields say so); each is
transcribed alone, so every word is the one party's. A mono recording (a phone's mix, a USB
import) is one track with no speaker. Any container the player reads (WAV, FLAC, Opus) will do.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from callrec.media.decode import AudioFileError, read_all
from callrec.transcribe.base import Engine, Samples, TranscribeError, Word

#: Speakers of a stereo recording whose source names none.
LEFT: Final = "left"
RIGHT: Final = "right"


def speakers_of(channels: int, extra: Mapping[str, Any]) -> tuple[str, ...]:
    """The speaker of each channel: from the SIP fields of a recording's ``extra`` (``left``
    is ``caller``...), ``left``/``right`` for another stereo file, none for a mono one."""
    if channels == 1:
        return ("",)
    sip = extra.get("sip") if isinstance(extra, Mapping) else None
    if isinstance(sip, Mapping):
        left, right = str(sip.get("left") or LEFT), str(sip.get("right") or RIGHT)
        return (left, right)
    return (LEFT, RIGHT)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackWord:
    """A word of a recording: its channel and speaker, and the word."""

    channel: int
    speaker: str
    word: Word


@dataclass(frozen=True, slots=True, kw_only=True)
class Transcription:
    """What an engine heard in a recording."""

    engine: str
    language: str
    words: list[TrackWord]
    #: Seconds of the recording.
    audio_seconds: float
    #: Seconds the engine took (wall clock, all tracks).
    elapsed_seconds: float


def transcribe_samples(
    engine: Engine, samples: Samples, rate: int, speakers: Sequence[str]
) -> Transcription:
    """Transcribe interleaved PCM of ``len(speakers)`` channels, one channel at a time."""
    channels = len(speakers)
    frames = samples.reshape(-1, channels) if channels > 1 else samples.reshape(-1, 1)
    started = time.monotonic()
    words: list[TrackWord] = []
    for channel, speaker in enumerate(speakers):
        track = np.ascontiguousarray(frames[:, channel])
        words.extend(
            TrackWord(channel=channel, speaker=speaker, word=w)
            for w in engine.transcribe(track, rate)
        )
    words.sort(key=lambda t: (t.word.start, t.channel))
    return Transcription(
        engine=engine.name,
        language=engine.language,
        words=words,
        audio_seconds=frames.shape[0] / rate if rate else 0.0,
        elapsed_seconds=time.monotonic() - started,
    )


def transcribe_file(engine: Engine, path: Path, extra: Mapping[str, Any]) -> Transcription:
    """Transcribe the recording file at ``path`` (``extra``: its catalogue fields, which
    name the speakers of a SIP recording's channels)."""
    try:
        layout, samples = read_all(path)
    except (OSError, AudioFileError) as exc:
        raise TranscribeError(f"cannot read {path}: {exc}") from exc
    if layout.channels not in (1, 2):
        raise TranscribeError(f"{path}: {layout.channels} channels; 1 or 2 are transcribed")
    return transcribe_samples(
        engine, samples, layout.sample_rate, speakers_of(layout.channels, extra)
    )
