"""The embedded engine: PocketSphinx with the US English model its wheel ships.

Nothing to download: ``pip install callrec`` brings the model (``pocketsphinx/model/en-us``).
A track is cut into stretches of speech by PocketSphinx's own voice activity detector, each
decoded as one utterance: a whole call as one utterance would keep every hypothesis of it in
memory. Word times come from the decoder's frames (100 a second), put back on the track's time
line; the confidence is the word's posterior probability.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Final

from callrec.transcribe.base import ENGINE_RATE, Samples, TranscribeError, Word, resample

NAME: Final = "pocketsphinx"
#: Languages the shipped model transcribes.
LANGUAGES: Final = ("en", "en-us")
#: Frames a second of PocketSphinx's front end (10 ms frames).
FRAME_RATE: Final = 100
#: What the decoder reports that is not a word: silence, noise, utterance marks.
_FILLER = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+)$")
#: An alternative pronunciation's mark: ``that(2)`` is the word ``that``.
_VARIANT = re.compile(r"\(\d+\)$")


def check_pocketsphinx(*, language: str, model_dir: str) -> None:
    """Refuse what this engine cannot do, without loading its model."""
    if model_dir:
        raise TranscribeError(
            "transcribe_model_dir is for faster-whisper; pocketsphinx uses the en-US model "
            "its package ships (leave transcribe_model_dir empty)"
        )
    if language.lower() not in LANGUAGES:
        raise TranscribeError(
            f"pocketsphinx ships an English (en-US) model only, not {language!r}: set "
            "transcribe_language = en, or use transcribe_engine = faster-whisper"
        )
    try:
        from pocketsphinx import get_model_path
    except ImportError as exc:  # pragma: no cover - a runtime dependency
        raise TranscribeError(f"pocketsphinx is not installed: {exc}") from exc
    if not (Path(get_model_path()) / "en-us" / "en-us").is_dir():
        raise TranscribeError(f"pocketsphinx's en-US model is missing from {get_model_path()}")


class PocketSphinxEngine:
    """PocketSphinx over the built-in en-US model."""

    name = NAME

    def __init__(self, *, language: str = "en", model_dir: str = "") -> None:
        check_pocketsphinx(language=language, model_dir=model_dir)
        self.language = language
        try:
            from pocketsphinx import Decoder, Segmenter
        except ImportError as exc:  # pragma: no cover - a runtime dependency
            raise TranscribeError(f"pocketsphinx is not installed: {exc}") from exc
        try:
            self._decoder: Any = Decoder(samprate=ENGINE_RATE, loglevel="FATAL")
        except (RuntimeError, ValueError) as exc:
            raise TranscribeError(f"cannot load pocketsphinx's en-US model: {exc}") from exc
        self._segmenter: Any = Segmenter
        self._logmath: Any = self._decoder.get_logmath()
        # The decoder adapts its cepstral mean from one utterance to the next; each track
        # starts from the model's, so a track's words do not depend on what came before.
        self._initial_cmn: str = self._decoder.get_cmn()

    def transcribe(self, samples: Samples, rate: int) -> list[Word]:
        pcm = resample(samples, rate).astype("<i2").tobytes()
        self._decoder.set_cmn(self._initial_cmn)
        words: list[Word] = []
        segmenter = self._segmenter(sample_rate=ENGINE_RATE)
        for segment in segmenter.segment(io.BytesIO(pcm)):
            words.extend(w.shifted(segment.start_time) for w in self._decode(segment.pcm))
        return words

    def _decode(self, pcm: bytes) -> list[Word]:
        decoder = self._decoder
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        if decoder.hyp() is None:
            return []
        out: list[Word] = []
        for seg in decoder.seg():
            if _FILLER.match(seg.word):
                continue
            text = _VARIANT.sub("", seg.word)
            # The binding hands out the posterior as a probability already; some builds
            # give the log (a value <= 0): then turn it into one.
            prob = float(seg.prob)
            if prob < 0:
                prob = float(self._logmath.exp(int(seg.prob)))
            out.append(
                Word(
                    text=text,
                    start=seg.start_frame / FRAME_RATE,
                    end=(seg.end_frame + 1) / FRAME_RATE,
                    confidence=min(1.0, max(0.0, prob)),
                )
            )
        return out
