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

#: The 2 s test signal, encoded with each codec.
SIGNAL = {"PCMA": "signal.alaw", "PCMU": "signal.ulaw", "G722": "signal.g722"}


def encoded(codec: str) -> bytes:
    """The committed 2 s test signal encoded with ``codec`` (100 packets of 20 ms)."""
    return (CODEC_DATA / SIGNAL[codec]).read_bytes()
