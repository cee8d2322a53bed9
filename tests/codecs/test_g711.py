"""G.711 A-law (PCMA) and mu-law (PCMU)."""

from __future__ import annotations

import numpy as np
import pytest

from callrec.codecs import PCMA, PCMU, Codec
from callrec.codecs.g711 import (
    ALAW_DECODE_TABLE,
    ALAW_ENCODE_TABLE,
    ULAW_DECODE_TABLE,
    ULAW_ENCODE_TABLE,
)
from tests.support.audio import pcm, samples, snr_db
from tests.support.data import CODEC_DATA

#: Every int16 value once.
ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int64)

parametrize_laws = pytest.mark.parametrize("codec", [PCMA, PCMU], ids=["PCMA", "PCMU"])


@pytest.mark.parametrize(
    ("code", "expected"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24), (0x80, 5504)],
)
def test_alaw_decodes_known_codes(code: int, expected: int) -> None:
    assert PCMA.decoder().decode(bytes([code])) == pcm([expected])


@pytest.mark.parametrize(
    ("code", "expected"),
    [(0xFF, 0), (0x7F, 0), (0x80, 32124), (0x00, -32124), (0xFE, 8), (0xEF, 132)],
)
def test_ulaw_decodes_known_codes(code: int, expected: int) -> None:
    assert PCMU.decoder().decode(bytes([code])) == pcm([expected])


def test_committed_code_references_are_the_decode_tables() -> None:
    assert (CODEC_DATA / "codes.alaw.ffmpeg.s16le").read_bytes() == ALAW_DECODE_TABLE.tobytes()
    assert (CODEC_DATA / "codes.ulaw.ffmpeg.s16le").read_bytes() == ULAW_DECODE_TABLE.tobytes()


def test_tables_have_the_documented_shapes_and_cannot_be_written() -> None:
    for decode_table in (ALAW_DECODE_TABLE, ULAW_DECODE_TABLE):
        assert decode_table.shape == (256,)
        assert decode_table.dtype == np.dtype("<i2")
    for encode_table in (ALAW_ENCODE_TABLE, ULAW_ENCODE_TABLE):
        assert encode_table.shape == (65536,)
        assert encode_table.dtype == np.uint8
    with pytest.raises(ValueError, match="read-only"):
        ALAW_DECODE_TABLE[0] = 0


def test_alaw_encoding_a_decoded_code_gives_the_code_back() -> None:
    for code in range(256):
        assert PCMA.encoder().encode(PCMA.decoder().decode(bytes([code]))) == bytes([code])


def test_ulaw_encoding_a_decoded_code_gives_the_code_back() -> None:
    for code in range(256):
        # Mu-law has two zeros; G.711 encodes zero as the positive one.
        expected = 0xFF if code == 0x7F else code
        assert PCMU.encoder().encode(PCMU.decoder().decode(bytes([code]))) == bytes([expected])


@parametrize_laws
def test_round_trip_is_within_half_a_step_for_every_sample(codec: Codec) -> None:
    decoded = samples(codec.decoder().decode(codec.encoder().encode(pcm(ALL_SAMPLES))))

    # The steps double every segment, from 16 (A-law) or 8 (mu-law) to 1024: half a step is
    # never more than 1/32 of the magnitude plus half the smallest step.
    assert np.all(np.abs(decoded - ALL_SAMPLES) <= np.abs(ALL_SAMPLES) // 32 + 8)


@pytest.mark.parametrize(("codec", "min_snr"), [(PCMA, 35.0), (PCMU, 40.0)], ids=["PCMA", "PCMU"])
def test_round_trip_of_a_tone_keeps_the_g711_signal_to_noise_ratio(
    codec: Codec, min_snr: float
) -> None:
    t = np.arange(codec.sample_rate) / codec.sample_rate
    tone = np.round(0.3 * 32767 * np.sin(2 * np.pi * 1000 * t)).astype(np.int64)

    decoded = samples(codec.decoder().decode(codec.encoder().encode(pcm(tone))))

    assert snr_db(tone, decoded) > min_snr


@pytest.mark.parametrize(
    ("codec", "filename"), [(PCMA, "signal.alaw"), (PCMU, "signal.ulaw")], ids=["PCMA", "PCMU"]
)
def test_encoding_ffmpegs_decoding_gives_the_committed_bytes_back(
    codec: Codec, filename: str
) -> None:
    # Decoded levels sit inside their own quantisation interval, so re-encoding is exact,
    # except that mu-law's negative zero comes back as its positive zero.
    reference = (CODEC_DATA / f"{filename}.ffmpeg.s16le").read_bytes()
    expected = (CODEC_DATA / filename).read_bytes()
    if codec is PCMU:
        expected = expected.replace(b"\x7f", b"\xff")

    assert codec.encoder().encode(reference) == expected


def test_encoder_follows_the_itu_decision_levels_at_segment_edges() -> None:
    # ITU-T G.191 folds negative input with one's complement: -x codes like x - 1.
    assert PCMA.encoder().encode(pcm([511, 512, -512, -513])) == bytes([0xCA, 0xF5, 0x4A, 0x75])
    assert PCMU.encoder().encode(pcm([-31612, -31613])) == bytes([0x01, 0x00])


@parametrize_laws
def test_decoder_takes_any_bytes_like_payload(codec: Codec) -> None:
    payload = bytes([0x00, 0x55, 0xD5, 0xFF])
    expected = codec.decoder().decode(payload)

    assert isinstance(expected, bytes)
    # Typed as bytes, but slices of a receive buffer must work too.
    assert len(expected) == 8
    assert codec.decoder().decode(bytearray(payload)) == expected  # type: ignore[arg-type]
    assert codec.decoder().decode(memoryview(payload)) == expected  # type: ignore[arg-type]


@parametrize_laws
def test_empty_payload_decodes_to_no_samples(codec: Codec) -> None:
    assert codec.decoder().decode(b"") == b""
    assert codec.encoder().encode(b"") == b""


@parametrize_laws
def test_encoder_refuses_a_partial_sample(codec: Codec) -> None:
    with pytest.raises(ValueError, match=r"^PCM has a partial sample: 3 bytes$"):
        codec.encoder().encode(b"\x00\x01\x02")


@parametrize_laws
def test_timestamps_count_one_unit_per_byte_and_sample(codec: Codec) -> None:
    assert codec.timestamp_units(160) == 160
    assert codec.samples_for_timestamp(160) == 160
    assert len(codec.decoder().decode(bytes(160))) == 2 * 160
