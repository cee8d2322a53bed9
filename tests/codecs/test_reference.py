"""Our decoders against FFmpeg, byte for byte, on the committed encoded files."""

from __future__ import annotations

import pytest

from callrec.codecs import get_codec

from .utils import (
    DATA_DIR,
    PACKET_BYTES,
    REFERENCES,
    decode_in_packets,
    ffmpeg_decode,
    needs_ffmpeg,
)

parametrize_references = pytest.mark.parametrize(
    ("filename", "codec_name"), REFERENCES.items(), ids=list(REFERENCES)
)


@parametrize_references
def test_decoder_matches_committed_ffmpeg_reference(filename: str, codec_name: str) -> None:
    codec = get_codec(codec_name)
    encoded = (DATA_DIR / filename).read_bytes()
    reference = (DATA_DIR / f"{filename}.ffmpeg.s16le").read_bytes()

    decoded = decode_in_packets(codec, encoded)

    assert len(decoded) == len(reference)
    assert decoded == reference


@needs_ffmpeg
@parametrize_references
def test_decoder_matches_live_ffmpeg(filename: str, codec_name: str) -> None:
    codec = get_codec(codec_name)
    path = DATA_DIR / filename

    reference = ffmpeg_decode(codec_name, path)

    assert reference == (DATA_DIR / f"{filename}.ffmpeg.s16le").read_bytes()
    assert decode_in_packets(codec, path.read_bytes()) == reference


@pytest.mark.parametrize("packet_bytes", [1, 7, PACKET_BYTES, 1 << 20])
@parametrize_references
def test_packetisation_does_not_change_the_output(
    filename: str, codec_name: str, packet_bytes: int
) -> None:
    codec = get_codec(codec_name)
    encoded = (DATA_DIR / filename).read_bytes()

    decoded = decode_in_packets(codec, encoded, packet_bytes)

    assert decoded == (DATA_DIR / f"{filename}.ffmpeg.s16le").read_bytes()


@pytest.mark.parametrize("filename", ["codes.alaw", "codes.ulaw"])
def test_code_files_hold_every_byte_once(filename: str) -> None:
    # So the reference of these files is FFmpeg's whole 256-entry decoding table.
    assert (DATA_DIR / filename).read_bytes() == bytes(range(256))
