"""Regenerate the phone-local (USB) edge files under tests/data/localfile/.

Run from the repository root with the project's venv::

    .venv/bin/python tools/make_localfile_testdata.py

Every file is built by hand, byte by byte, from a deterministic 1-second tone encoded by our own
encoders (no randomness, no clock), so the output is identical on every run;
``tests/media/test_localfile_data.py`` checks that the committed files are what this script
makes. ``tests/data/localfile/README.md`` says what each file is.
"""

from __future__ import annotations

import io
import struct
import sys
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from callrec.codecs import Codec, get_codec
from callrec.media.localfile import HEADER_SIZE, build_file
from callrec.sim.phone import build_packets

DATA_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "localfile"
#: Fixed RTP identifiers, so the files never change.
SSRC = 0x0C383E0E
FIRST_SEQ = 65500  # wraps past 65535 inside the files: readers must use serial arithmetic
FIRST_TS = 4_294_960_000  # wraps too
#: 20 ms of any of our codecs is 160 ticks of the 8 kHz RTP clock.
INCREMENT = 160


def tone(codec: Codec, seconds: float = 1.0) -> npt.NDArray[np.int16]:
    """A 440 Hz + 1250 Hz tone at the codec's own rate, 1/4 of full scale."""
    rate = codec.sample_rate
    t = np.arange(round(seconds * rate)) / rate
    signal = 0.15 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1250 * t)
    return np.round(signal * 32767).astype(np.int16)


def units(name: str, *, rtp_headers: bool, seconds: float = 1.0) -> list[bytes]:
    codec = get_codec(name)
    packets = build_packets(
        tone(codec, seconds), codec, ssrc=SSRC, first_seq=FIRST_SEQ, first_ts=FIRST_TS
    )
    return [p.serialize() if rtp_headers else p.payload for p in packets]


def with_data_size(data: bytes, data_size: int, byte_order: str = "<") -> bytes:
    """``data`` with the header's dataSize field replaced."""
    return data[:72] + struct.pack(f"{byte_order}I", data_size) + data[HEADER_SIZE:]


def standard_wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(tone(get_codec("PCMA"), 0.1).astype("<i2").tobytes())
    return out.getvalue()


def build() -> dict[str, bytes]:
    """File name -> contents of every file this script makes."""
    pcma_rtp = build_file(codec="PCMA", units=units("PCMA", rtp_headers=True), increment=INCREMENT)
    g722_bare = build_file(
        codec="G722", units=units("G722", rtp_headers=False), increment=INCREMENT
    )
    pcmu_big = build_file(
        codec="PCMU",
        units=units("PCMU", rtp_headers=False),
        increment=INCREMENT,
        byte_order="big",
    )
    # iLBC codes 20 ms in 38 bytes. We do not decode it.
    ilbc = build_file(codec="iLBC", units=[bytes(range(38))] * 50, increment=INCREMENT)
    return {
        # Clean files: 50 units of 20 ms, 1.00 s each.
        "pcma-rtp.wav": pcma_rtp,
        "g722-bare.wav": g722_bare,
        # Big-endian header (the units are byte streams either way).
        "big-endian.wav": pcmu_big,
        # Power lost: the header announces 50 units, the file stops 40 bytes into unit 31.
        "truncated.wav": pcma_rtp[: HEADER_SIZE + 30 * 172 + 40],
        # The header says 5 units (never rewritten after a power cut); the file holds 50.
        "lying-datasize.wav": with_data_size(g722_bare, 5 * 160),
        # The header announces 200 units, four times what the file holds (bare G.722).
        "datasize-too-big.wav": with_data_size(g722_bare, 200 * 160),
        "unknown-codec.wav": ilbc,
        "zero-length.wav": b"",
        # The first 40 bytes of a good file: cut inside the header.
        "cut-in-header.wav": pcma_rtp[:40],
        # Text saved under a .wav name, and a standard RIFF/WAVE file.
        "not-this-format.wav": b"These are not the bytes of a phone recording.\n" * 4,
        "standard.wav": standard_wav(),
    }


def main() -> None:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for name, data in build().items():
        (DATA_DIR / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
