"""Transcription (issue 18): local speech-to-text engines behind one small interface.

* :mod:`callrec.transcribe.base`: :class:`Engine` (PCM and its rate in, :class:`Word` out),
  :class:`TranscribeError`, the resampler.
* :mod:`callrec.transcribe.pocketsphinx_engine`: the embedded default, whose model ships in
  its wheel; :mod:`callrec.transcribe.whisper_engine`: faster-whisper over an operator's model
  directory (an optional extra). :mod:`callrec.transcribe.registry` loads one by name.
* :mod:`callrec.transcribe.audio`: a recording's channels as tracks, with their speakers.
* :mod:`callrec.transcribe.pool`: niced worker processes, so recording keeps the CPU.
* :mod:`callrec.transcribe.captions`: WebVTT and SRT.

No catalogue here: :mod:`callrec.jobs.transcription` stores what the engines hear.
"""

from callrec.transcribe.base import ENGINE_RATE, Engine, TranscribeError, Word
from callrec.transcribe.registry import ENGINES, check_engine, load_engine

__all__ = [
    "ENGINES",
    "ENGINE_RATE",
    "Engine",
    "TranscribeError",
    "Word",
    "check_engine",
    "load_engine",
]
