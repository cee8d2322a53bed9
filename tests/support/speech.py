"""Spoken test audio: sentences said by espeak-ng (a Debian package, see the Makefile),
at the rate a recording has, for the transcription tests and benchmark."""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import wave

import numpy as np
import numpy.typing as npt
import pytest

from callrec.transcribe.base import resample

#: The voice and speed PocketSphinx's en-US model hears best among espeak-ng's (measured:
#: the default male voice at 150 words a minute comes out mostly wrong).
VOICE = "en-us+f2"
WORDS_PER_MINUTE = 130

#: Sentences the embedded engine hears well enough to find their key words.
CALLER_SENTENCE = "please send the invoice for the blue car tomorrow morning"
CALLEE_SENTENCE = "i would like to cancel my order"


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


needs_espeak = pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng (make sysdeps)")


@functools.lru_cache(maxsize=32)
def _spoken(text: str, rate: int) -> bytes:
    out = subprocess.run(
        ["espeak-ng", "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    with wave.open(io.BytesIO(out)) as w:
        native = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return resample(samples, native, rate).astype("<i2").tobytes()


def speak(text: str, rate: int = 16000, *, pad: float = 0.3) -> npt.NDArray[np.int16]:
    """``text`` said at ``rate`` Hz, mono 16-bit, with ``pad`` seconds of silence either side."""
    voice = np.frombuffer(_spoken(text, rate), dtype="<i2")
    silence = np.zeros(int(pad * rate), dtype=np.int16)
    return np.concatenate([silence, voice, silence])


def stereo(left: npt.NDArray[np.int16], right: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """Two tracks side by side, one after the other in time (the caller speaks, then the
    callee), interleaved left/right."""
    length = len(left) + len(right)
    out = np.zeros((length, 2), dtype=np.int16)
    out[: len(left), 0] = left
    out[len(left) :, 1] = right
    return out.reshape(-1)


def write_wav(path: str, samples: npt.NDArray[np.int16], rate: int, channels: int = 1) -> None:
    with wave.open(path, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
