"""G.726, G.729 and G.723.1 against FFmpeg, byte for byte, on the committed encoded files;
and how each behaves when a phone sends them in RTP payloads."""

from __future__ import annotations

import av
import numpy as np
import pytest

from callrec.codecs import get_codec
from callrec.codecs.g723 import G723
from callrec.codecs.g726 import G726_CODECS, G726Codec
from callrec.codecs.g729 import G729
from callrec.exceptions import UnsupportedCodecError
from tests.support.audio import decode_in_packets, decode_payloads, snr_db, tone
from tests.support.data import CODEC_DATA, FFMPEG_REFERENCES
from tests.support.ffmpeg import ffmpeg_decode, needs_ffmpeg

parametrize_references = pytest.mark.parametrize(
    ("filename", "codec_name", "packet_bytes"),
    [(f, c, n) for f, (c, n) in FFMPEG_REFERENCES.items()],
    ids=list(FFMPEG_REFERENCES),
)


def reference(filename: str) -> bytes:
    return (CODEC_DATA / f"{filename}.ffmpeg.s16le").read_bytes()


@parametrize_references
def test_decoder_matches_committed_ffmpeg_reference(
    filename: str, codec_name: str, packet_bytes: int
) -> None:
    encoded = (CODEC_DATA / filename).read_bytes()

    decoded = decode_in_packets(get_codec(codec_name), encoded, packet_bytes)

    assert len(decoded) == len(reference(filename))
    assert decoded == reference(filename)


@needs_ffmpeg
@parametrize_references
def test_decoder_matches_live_ffmpeg(filename: str, codec_name: str, packet_bytes: int) -> None:
    path = CODEC_DATA / filename

    expected = ffmpeg_decode(codec_name, path)

    assert expected == reference(filename)
    assert decode_in_packets(get_codec(codec_name), path.read_bytes(), packet_bytes) == expected


@parametrize_references
def test_a_payload_of_several_packets_decodes_the_same(
    filename: str, codec_name: str, packet_bytes: int
) -> None:
    # Phones choose their ptime: 60 ms payloads hold three 20 ms ones' frames.
    encoded = (CODEC_DATA / filename).read_bytes()

    decoded = decode_in_packets(get_codec(codec_name), encoded, 3 * packet_bytes)

    assert decoded == reference(filename)


@pytest.mark.parametrize("codec", G726_CODECS, ids=[c.name for c in G726_CODECS])
@pytest.mark.parametrize("packet_bytes", [1, 7, 1 << 20])
def test_g726_is_a_plain_bit_stream(codec: G726Codec, packet_bytes: int) -> None:
    # Any cut of the stream decodes the same: joining payloads before decoding is safe.
    assert codec.concatenable
    pcm = tone(8000, 0.5).astype("<i2").tobytes()
    encoder = codec.encoder()
    encoded = encoder.encode(pcm) + encoder.flush()
    assert len(encoded) == len(pcm) // 2 * codec.bits // 8
    whole = codec.decoder().decode(encoded)
    if packet_bytes * 8 % codec.bits == 0:
        assert decode_in_packets(codec, encoded, packet_bytes) == whole
    decoded = np.frombuffer(whole, "<i2").astype(np.int64)
    original = np.frombuffer(pcm, "<i2").astype(np.int64)
    assert snr_db(original, decoded) > 10


def test_rfc_3551_and_aal2_bit_orders_differ() -> None:
    # The same bytes read in the two orders: a phone's G726-32 must not be read as AAL2.
    encoded = (CODEC_DATA / "signal.g726-32").read_bytes()

    rfc = get_codec("G726-32").decoder().decode(encoded)
    aal2 = get_codec("AAL2-G726-32").decoder().decode(encoded)

    assert rfc == reference("signal.g726-32")
    assert aal2 != rfc


def test_g726_payload_sizes_are_its_timestamp_units() -> None:
    for codec, units in zip(G726_CODECS[:4], (320, 213, 160, 128), strict=True):
        assert codec.timestamp_units(80) == units
    assert get_codec("G726-32").timestamp_units(80) == 160


def test_g729_sid_frame_is_ten_ms_of_silence() -> None:
    """Annex B: a payload may end with a 2-byte SID frame. FFmpeg has no comfort noise for
    it, so it is 10 ms of silence; the speech frames before it are FFmpeg's own decoding."""
    speech = (CODEC_DATA / "noise.g729").read_bytes()[:20]
    sid = bytes([0x5A, 0xC0])

    pcm = G729.decoder().decode(speech + sid)

    assert G729.timestamp_units(len(speech + sid)) == 240
    assert len(pcm) == 2 * 240
    assert pcm[:320] == reference("noise.g729")[:320]
    assert pcm[320:] == bytes(160)
    assert G729.decoder().decode(sid) == bytes(160)


def test_g729_payloads_are_decoded_one_by_one() -> None:
    assert not G729.concatenable
    frames = (CODEC_DATA / "noise.g729").read_bytes()[:60]
    payloads = [frames[:20], frames[20:40] + bytes(2), frames[40:60]]

    pcm = decode_payloads(G729, payloads)

    expected = reference("noise.g729")
    assert len(pcm) == 2 * 80 * 7
    assert pcm[:640] == expected[:640]
    assert pcm[640:800] == bytes(160)


def test_g729_has_no_encoder() -> None:
    with pytest.raises(UnsupportedCodecError, match=r"no G\.729 encoder"):
        G729.encoder()


def test_g723_frames_of_each_kind_decode_as_ffmpeg_does() -> None:
    """A 6.3 kbit/s frame, a SID frame, an untransmitted frame and a 5.3 kbit/s frame, each
    its own payload: 30 ms each, as FFmpeg's decoder makes them from one packet each."""
    rng = np.random.default_rng(5)
    payloads = []
    for size, kind in ((24, 0), (4, 2), (1, 3), (20, 1)):
        frame = bytearray(rng.bytes(size))
        frame[0] = (frame[0] & ~3) | kind
        payloads.append(bytes(frame))
    context = av.CodecContext.create("g723_1", "r")
    assert isinstance(context, av.AudioCodecContext)
    context.sample_rate, context.layout = 8000, "mono"
    expected = b"".join(
        f.to_ndarray().astype("<i2").tobytes()
        for p in payloads
        for f in context.decode(av.Packet(p))
    )

    pcm = decode_payloads(G723, payloads)

    assert len(pcm) == 2 * 240 * 4
    assert pcm == expected


def test_g723_timestamp_units_follow_the_frame_sizes() -> None:
    assert not G723.concatenable
    assert G723.ptime == 30
    assert [G723.timestamp_units(n) for n in (24, 20, 48, 40, 4, 28, 0)] == [
        240, 240, 480, 480, 240, 480, 0,
    ]  # fmt: skip


def test_a_payload_ffmpeg_refuses_keeps_its_place_as_silence() -> None:
    # Bad input never shortens a recording: the audio after it stays where the clock puts it.
    good = (CODEC_DATA / "noise.g729").read_bytes()[:20]
    decoder = G729.decoder()

    pcm = decoder.decode(good) + decoder.decode(bytes(13)) + decoder.decode(good)

    # 13 bytes: a frame FFmpeg decodes, and 3 bytes of no frame, 10 ms of silence.
    assert len(pcm) == 2 * 80 * 6
    assert pcm[480:640] == bytes(160)
    assert len(G723.decoder().decode(bytes([0]) * 23)) == 2 * 240


def test_g723_and_g726_encoders_round_trip() -> None:
    pcm = tone(8000, 0.6).astype("<i2").tobytes()
    for codec in (G723, get_codec("G726-32")):
        encoder = codec.encoder()
        encoded = encoder.encode(pcm[:1000]) + encoder.encode(pcm[1000:]) + encoder.flush()
        decoded = decode_payloads(codec, [encoded])
        assert len(decoded) >= len(pcm)
