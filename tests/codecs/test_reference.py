"""Our decoders against FFmpeg, byte for byte, on the committed encoded files."""

from __future__ import annotations

import pytest

from callrec.codecs import get_codec
from tests.support.audio import decode_in_packets
from tests.support.data import CODEC_DATA, REFERENCES
from tests.support.ffmpeg import ffmpeg_decode, needs_ffmpeg
from tests.support.rtp import PACKET_BYTES

parametrize_references = pytest.mark.parametrize(
    ("filename", "codec_name"), REFERENCES.items(), ids=list(REFERENCES)
)


@parametrize_references
def test_decoder_matches_committed_ffmpeg_reference(filename: str, codec_name: str) -> None:
    codec = get_codec(codec_name)
    encoded = (CODEC_DATA / filename).read_bytes()
    reference = (CODEC_DATA / f"{filename}.ffmpeg.s16le").read_bytes()

    decoded = decode_in_packets(codec, encoded)

    assert len(decoded) == len(reference)
    assert decoded == reference


@needs_ffmpeg
@parametrize_references
def test_decoder_matches_live_ffmpeg(filename: str, codec_name: str) -> None:
    codec = get_codec(codec_name)
    path = CODEC_DATA / filename

    reference = ffmpeg_decode(codec_name, path)

    assert reference == (CODEC_DATA / f"{filename}.ffmpeg.s16le").read_bytes()
    assert decode_in_packets(codec, path.read_bytes()) == reference


@pytest.mark.parametrize("packet_bytes", [1, 7, PACKET_BYTES, 1 << 20])
@parametrize_references
def test_packetisation_does_not_change_the_output(
    filename: str, codec_name: str, packet_bytes: int
) -> None:
    codec = get_codec(codec_name)
    encoded = (CODEC_DATA / filename).read_bytes()

    decoded = decode_in_packets(codec, encoded, packet_bytes)

    assert decoded == (CODEC_DATA / f"{filename}.ffmpeg.s16le").read_bytes()


@pytest.mark.parametrize("filename", ["codes.alaw", "codes.ulaw"])
def test_code_files_hold_every_byte_once(filename: str) -> None:
    # So the reference of these files is FFmpeg's whole 256-entry decoding table.
    assert (CODEC_DATA / filename).read_bytes() == bytes(range(256))
