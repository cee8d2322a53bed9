"""The better engine: Whisper through faster-whisper (CTranslate2), with a model directory the
operator supplies.

Not installed with callrec: ``pip install 'callrec[whisper]'``, then a converted model (for
example ``Systran/faster-whisper-small``: ``model.bin``, ``config.json``, ``tokenizer.json``,
``vocabulary.*``) copied to ``transcribe_model_dir``. callrec never downloads one: a directory
without those files is refused at start (:func:`check_model_dir`), before faster-whisper could
go looking for a tokenizer on the network. Runs on the CPU, int8, one thread per worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import numpy as np

from callrec.transcribe.base import ENGINE_RATE, Samples, TranscribeError, Word, resample

NAME: Final = "faster-whisper"
#: Files a CTranslate2 Whisper model directory must hold (the vocabulary's suffix varies).
REQUIRED_FILES: Final = ("model.bin", "config.json", "tokenizer.json")
INSTALL_HINT: Final = "pip install 'callrec[whisper]'"


def check_model_dir(model_dir: str) -> Path:
    """The model directory, if it looks like a converted Whisper model; else a
    :class:`TranscribeError` that says what is missing."""
    if not model_dir:
        raise TranscribeError(
            "transcribe_engine = faster-whisper needs transcribe_model_dir: a directory with a "
            "CTranslate2 Whisper model (model.bin, config.json, tokenizer.json); see "
            "docs/transcription.md"
        )
    path = Path(model_dir)
    if not path.is_dir():
        raise TranscribeError(f"transcribe_model_dir {model_dir}: no such directory")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise TranscribeError(
            f"transcribe_model_dir {model_dir} is not a faster-whisper model: "
            f"{', '.join(missing)} missing"
        )
    if (path / "model.bin").stat().st_size == 0:
        raise TranscribeError(f"transcribe_model_dir {model_dir}: model.bin is empty")
    return path


class WhisperEngine:
    """faster-whisper over a model directory."""

    name = NAME

    def __init__(self, *, language: str = "en", model_dir: str = "") -> None:
        path = check_model_dir(model_dir)
        self.language = language
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise TranscribeError(
                f"transcribe_engine = faster-whisper, but faster-whisper is not installed "
                f"({exc}): {INSTALL_HINT}"
            ) from exc
        try:
            self._model: Any = WhisperModel(
                str(path), device="cpu", compute_type="int8", cpu_threads=1, local_files_only=True
            )
        except Exception as exc:  # CTranslate2 raises RuntimeError, ValueError, OSError...
            raise TranscribeError(f"cannot load the model in {model_dir}: {exc}") from exc

    def transcribe(self, samples: Samples, rate: int) -> list[Word]:
        audio = resample(samples, rate, ENGINE_RATE).astype(np.float32) / 32768.0
        segments, _info = self._model.transcribe(
            audio,
            language=self.language.split("-")[0] or None,
            word_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        out: list[Word] = []
        for segment in segments:
            for w in segment.words or ():
                text = str(w.word).strip()
                if text:
                    start = max(0.0, float(w.start))
                    out.append(
                        Word(
                            text=text,
                            start=start,
                            end=max(start, float(w.end)),
                            confidence=min(1.0, max(0.0, float(w.probability))),
                        )
                    )
        return out
