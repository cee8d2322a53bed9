"""Make the reference data of the codecs callrec decodes through FFmpeg (G.726, G.729,
G.723.1) under tests/data/codecs/.

Run from the repository root with the project's venv::

    .venv/bin/python tools/make_ffmpeg_codec_testdata.py

The 8 kHz test signal of ``make_codec_testdata.py`` is encoded by FFmpeg's own G.726 and
G.723.1 encoders (through our encoder classes); FFmpeg has no G.729 encoder, so the G.729
file is seeded random 10-byte frames, each a valid frame of the 8 kbit/s bit stream. Each file
is then read by FFmpeg's raw demuxer and decoded by FFmpeg, the packets cut by FFmpeg and not
by us, to ``<file>.ffmpeg.s16le``: the references our decoders must match byte for byte. The
FFmpeg is the one in PyAV's wheel, so no system FFmpeg is needed; with FFmpeg on PATH the
tests also compare against ``ffmpeg`` itself (tests/support/ffmpeg.py has the commands).
"""

from __future__ import annotations

import av
import numpy as np
from make_codec_testdata import DATA_DIR, SEED, make_signal

from callrec.codecs import get_codec

#: File -> (codec, FFmpeg demuxer, demuxer options). The files are the codecs' test signals.
FILES = {
    "signal.g726-16": ("G726-16", "g726le", {"code_size": "2"}),
    "signal.g726-24": ("G726-24", "g726le", {"code_size": "3"}),
    "signal.g726-32": ("G726-32", "g726le", {"code_size": "4"}),
    "signal.g726-40": ("G726-40", "g726le", {"code_size": "5"}),
    "signal.aal2-g726-32": ("AAL2-G726-32", "g726", {"code_size": "4"}),
    "signal.g723": ("G723", "g723_1", {}),
    "noise.g729": ("G729", "g729", {}),
}
#: 4 s of G.729 frames.
G729_NOISE_BYTES = 4000


def ffmpeg_decode(path: str, demuxer: str, options: dict[str, str]) -> bytes:
    """FFmpeg's demuxing and decoding of a raw file, as s16le mono PCM."""
    pcm = []
    with av.open(path, format=demuxer, options=options) as container:
        for frame in container.decode(audio=0):
            samples = frame.to_ndarray().reshape(-1)
            pcm.append(samples.astype("<i2").tobytes())
    return b"".join(pcm)


def main() -> None:
    print(f"FFmpeg libavcodec {av.library_versions['libavcodec']} (PyAV {av.__version__})")
    signal = make_signal(8000).astype("<i2").tobytes()
    for name, (codec_name, demuxer, options) in FILES.items():
        if codec_name == "G729":
            data = np.random.default_rng(SEED).bytes(G729_NOISE_BYTES)
        else:
            encoder = get_codec(codec_name).encoder()
            data = encoder.encode(signal) + encoder.flush()
        path = DATA_DIR / name
        path.write_bytes(data)
        reference = path.with_name(name + ".ffmpeg.s16le")
        reference.write_bytes(ffmpeg_decode(str(path), demuxer, {"sample_rate": "8000"} | options))
        for written in (path, reference):
            print(f"{written.relative_to(DATA_DIR)}: {written.stat().st_size} bytes")


if __name__ == "__main__":
    main()
