"""Where the committed test data lives (``tests/data``) and what it holds."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"
#: Encoded test signals and FFmpeg's decoding of each (``tools/make_codec_testdata.py``).
CODEC_DATA = DATA / "codecs"
#: Files as phones record them locally (USB), good and damaged.
LOCALFILE_DATA = DATA / "localfile"
#: SIP messages of the RFCs and the SIPp scenarios.
SIP_DATA = DATA / "sip"

#: Encoded file under CODEC_DATA -> canonical codec name. Each has a ``<file>.ffmpeg.s16le`` twin.
REFERENCES = {
    "signal.alaw": "PCMA",
    "signal.ulaw": "PCMU",
    "signal.g722": "G722",
    "codes.alaw": "PCMA",
    "codes.ulaw": "PCMU",
    "noise.g722": "G722",
}

#: Encoded file under CODEC_DATA -> (canonical codec name, bytes of a 20 ms or 30 ms payload),
#: for the codecs decoded through FFmpeg (``tools/make_ffmpeg_codec_testdata.py``).
FFMPEG_REFERENCES = {
    "signal.g726-16": ("G726-16", 40),
    "signal.g726-24": ("G726-24", 60),
    "signal.g726-32": ("G726-32", 80),
    "signal.g726-40": ("G726-40", 100),
    "signal.aal2-g726-32": ("AAL2-G726-32", 80),
    "signal.g723": ("G723", 24),
    "noise.g729": ("G729", 20),
}

#: The 2 s test signal, encoded with each codec.
SIGNAL = {"PCMA": "signal.alaw", "PCMU": "signal.ulaw", "G722": "signal.g722"}


def encoded(codec: str) -> bytes:
    """The committed 2 s test signal encoded with ``codec`` (100 packets of 20 ms)."""
    return (CODEC_DATA / SIGNAL[codec]).read_bytes()
