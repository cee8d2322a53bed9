"""The engines by name, and the check ``callrec serve`` makes before it starts."""

from __future__ import annotations

import importlib.util
from typing import Final

from callrec.transcribe.base import Engine, TranscribeError
from callrec.transcribe.pocketsphinx_engine import NAME as POCKETSPHINX
from callrec.transcribe.pocketsphinx_engine import PocketSphinxEngine, check_pocketsphinx
from callrec.transcribe.whisper_engine import INSTALL_HINT, check_model_dir
from callrec.transcribe.whisper_engine import NAME as WHISPER

#: Engine names, the default first.
ENGINES: Final = (POCKETSPHINX, WHISPER)


def load_engine(name: str, *, model_dir: str = "", language: str = "en") -> Engine:
    """Load the named engine (read its model): a :class:`TranscribeError` says why not."""
    if name == POCKETSPHINX:
        return PocketSphinxEngine(language=language, model_dir=model_dir)
    if name == WHISPER:
        from callrec.transcribe.whisper_engine import WhisperEngine

        return WhisperEngine(language=language, model_dir=model_dir)
    raise TranscribeError(f"unknown transcription engine {name!r}: one of {', '.join(ENGINES)}")


def check_engine(name: str, *, model_dir: str = "", language: str = "en") -> None:
    """What can be checked without loading a model (``callrec serve`` starts fast): the
    engine exists and is installed, its model directory holds a model, it has the language."""
    if name == POCKETSPHINX:
        check_pocketsphinx(language=language, model_dir=model_dir)
        return
    if name == WHISPER:
        check_model_dir(model_dir)
        if importlib.util.find_spec("faster_whisper") is None:
            raise TranscribeError(
                f"transcribe_engine = faster-whisper, but faster-whisper is not installed: "
                f"{INSTALL_HINT}"
            )
        return
    load_engine(name, model_dir=model_dir, language=language)  # raises: unknown name
