"""callrec's own G.722 decoder (``callrec.codecs._g722``) against FFmpeg's and libg722's.

The committed files (test_reference.py) are speech-like; these streams are made to reach
the corners a phone's stream reaches rarely: every code, long runs of the largest codes
(the scale factors at their limits, the saturations), silence, and random bytes.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
import sysconfig
from itertools import pairwise
from pathlib import Path
from types import ModuleType

import av
import G722 as libg722
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import callrec.codecs
from callrec.codecs import G722
from callrec.codecs._g722 import Decoder
from tests.support.data import CODEC_DATA
from tests.support.rtp import PACKET_BYTES


def ffmpeg_decode(encoded: bytes) -> bytes:
    """FFmpeg's decode of a G.722 stream (PyAV's bundled libavcodec), s16 little-endian."""
    ctx = av.CodecContext.create("g722", "r")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate = 16000
    ctx.layout = "mono"
    ctx.open()
    frames = ctx.decode(av.Packet(encoded))
    pcm = b"".join(bytes(f.planes[0])[: f.samples * 2] for f in frames)
    return np.frombuffer(pcm, dtype=np.int16).astype("<i2").tobytes()


def libg722_decode(encoded: bytes) -> bytes:
    """libg722's decode, the decoder callrec used before its own (recordings made then)."""
    samples = libg722.G722(16000, 64000).decode(encoded)
    return np.frombuffer(samples, dtype=np.int16).astype("<i2").tobytes()


def in_packets(encoded: bytes, size: int) -> bytes:
    decoder = Decoder()
    return b"".join(decoder.decode(encoded[i : i + size]) for i in range(0, len(encoded), size))


def streams() -> dict[str, bytes]:
    rng = np.random.default_rng(20)
    loud = bytes([0x04, 0x3C, 0x44, 0x7C, 0x84, 0xBC, 0xC4, 0xFC])  # largest low-band codes
    return {
        "random": rng.integers(0, 256, 64000, dtype=np.uint8).tobytes(),
        "every code": bytes(range(256)) * 40,
        "largest codes": loud * 2000,
        "one code": b"\x3c" * 8000 + b"\xfc" * 8000 + b"\x04" * 8000,
        "silence": b"\xff" * 8000,
        "zeros": bytes(8000),
        "signal": (CODEC_DATA / "signal.g722").read_bytes(),
        "noise": (CODEC_DATA / "noise.g722").read_bytes(),
    }


STREAMS = streams()


@pytest.mark.parametrize("name", list(STREAMS))
def test_same_samples_as_ffmpeg_and_libg722(name: str) -> None:
    encoded = STREAMS[name]

    decoded = in_packets(encoded, PACKET_BYTES)

    assert len(decoded) == 4 * len(encoded)
    assert decoded == ffmpeg_decode(encoded)
    assert decoded == libg722_decode(encoded)


def test_the_streams_reach_the_limits() -> None:
    # Otherwise the comparison above would not cover the saturating paths.
    pcm = np.frombuffer(in_packets(STREAMS["largest codes"], PACKET_BYTES), dtype="<i2")
    assert pcm.min() == -32768
    assert pcm.max() == 32767


@settings(max_examples=50, deadline=None)
@given(
    encoded=st.binary(min_size=1, max_size=2000),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
)
def test_any_split_decodes_as_the_whole(encoded: bytes, cuts: list[int]) -> None:
    bounds = [0, *sorted(c for c in cuts if c <= len(encoded)), len(encoded)]
    decoder = Decoder()

    parts = [decoder.decode(encoded[a:b]) for a, b in pairwise(bounds)]

    assert b"".join(parts) == Decoder().decode(encoded) == ffmpeg_decode(encoded)


def test_codec_decoder_is_the_native_one() -> None:
    encoded = STREAMS["signal"][:PACKET_BYTES]

    assert G722.decoder().decode(encoded) == Decoder().decode(encoded)


def test_decoder_takes_no_arguments_and_refuses_text() -> None:
    with pytest.raises(TypeError):
        Decoder(16000)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Decoder().decode("text")  # type: ignore[arg-type]


def build_portable(tmp_path: Path) -> ModuleType:
    """The decoder compiled without its SSE2 zero predictor, as on a machine without SSE2."""
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    if shutil.which(compiler[0]) is None:
        pytest.skip("no C compiler")
    source = Path(callrec.codecs.__file__).parent / "_g722.c"
    target = tmp_path / f"_g722{sysconfig.get_config_var('EXT_SUFFIX')}"
    flags = ["-shared", "-fPIC", "-O2", "-DCALLREC_G722_PORTABLE"]
    include = f"-I{sysconfig.get_paths()['include']}"
    subprocess.run([*compiler, *flags, include, str(source), "-o", str(target)], check=True)
    spec = importlib.util.spec_from_file_location("_g722", target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_portable_build_decodes_the_same(tmp_path: Path) -> None:
    portable = build_portable(tmp_path)

    for name, encoded in STREAMS.items():
        decoder = portable.Decoder()
        decoded = b"".join(
            decoder.decode(encoded[i : i + PACKET_BYTES])
            for i in range(0, len(encoded), PACKET_BYTES)
        )
        assert decoded == in_packets(encoded, PACKET_BYTES), name
