"""G.722 at 64 kbit/s: the 8 kHz RTP clock, the state kept between packets, the encoder."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from callrec.codecs import G722
from callrec.codecs.g722 import G722_RTP_CLOCK_RATE, G722_SAMPLE_RATE
from tests.support.audio import decode_in_packets, encode_in_chunks, pcm, samples, snr_db
from tests.support.data import CODEC_DATA
from tests.support.rtp import PACKET_BYTES


def multitone(seconds: float = 1.0) -> npt.NDArray[np.int64]:
    """Tones in both G.722 sub-bands; their 20 Hz common period is far longer than the delay."""
    t = np.arange(int(seconds * G722_SAMPLE_RATE)) / G722_SAMPLE_RATE
    mix = sum(np.sin(2 * np.pi * f * t) for f in (440.0, 1300.0, 3100.0, 5200.0)) / 4
    return np.round(0.5 * 32767 * mix).astype(np.int64)


def test_rtp_clock_is_8_khz_although_it_samples_at_16_khz() -> None:
    assert (G722.clock_rate, G722.sample_rate) == (G722_RTP_CLOCK_RATE, G722_SAMPLE_RATE)
    assert (G722.clock_rate, G722.sample_rate) == (8000, 16000)


def test_a_160_byte_packet_is_160_timestamp_units_and_320_samples() -> None:
    assert G722.timestamp_units(PACKET_BYTES) == 160
    assert G722.samples_for_timestamp(160) == 320
    assert len(G722.decoder().decode(bytes(PACKET_BYTES))) == 320 * 2


def test_decoder_keeps_state_between_packets() -> None:
    encoded = (CODEC_DATA / "signal.g722").read_bytes()
    reference = (CODEC_DATA / "signal.g722.ffmpeg.s16le").read_bytes()
    packets = [encoded[i : i + PACKET_BYTES] for i in range(0, len(encoded), PACKET_BYTES)]

    # A fresh decoder per packet loses the predictor state and so the signal.
    without_state = b"".join(G722.decoder().decode(packet) for packet in packets)

    assert decode_in_packets(G722, encoded) == reference
    assert without_state != reference


def test_decoders_of_interleaved_streams_do_not_share_state() -> None:
    first = (CODEC_DATA / "signal.g722").read_bytes()[:8000]
    second = (CODEC_DATA / "noise.g722").read_bytes()
    decoders = G722.decoder(), G722.decoder()
    out: tuple[list[bytes], list[bytes]] = ([], [])

    for i in range(0, 4000, PACKET_BYTES):
        for stream, payload in enumerate((first, second)):
            out[stream].append(decoders[stream].decode(payload[i : i + PACKET_BYTES]))

    assert b"".join(out[0]) == decode_in_packets(G722, first[:4000])
    assert b"".join(out[1]) == decode_in_packets(G722, second)


def test_decoder_takes_any_bytes_like_payload() -> None:
    payload = (CODEC_DATA / "noise.g722").read_bytes()[:PACKET_BYTES]
    expected = G722.decoder().decode(payload)

    assert isinstance(expected, bytes)
    # Typed as bytes, but slices of a receive buffer must work too.
    assert G722.decoder().decode(bytearray(payload)) == expected  # type: ignore[arg-type]
    assert G722.decoder().decode(memoryview(payload)) == expected  # type: ignore[arg-type]


def test_empty_payload_decodes_to_no_samples() -> None:
    assert G722.decoder().decode(b"") == b""


def test_round_trip_keeps_the_signal_after_the_codec_delay() -> None:
    tone = multitone()

    decoded = samples(G722.decoder().decode(G722.encoder().encode(pcm(tone))))

    # The QMF filter pair delays the output; skip the start-up and compare at the best lag.
    assert len(decoded) == len(tone)
    start, stop = 1000, len(tone) - 100
    best = max(snr_db(tone[start:stop], decoded[start + lag : stop + lag]) for lag in range(64))
    assert best > 25.0


def test_encoder_holds_an_odd_sample_back_for_the_next_call() -> None:
    tone = pcm(multitone(0.1))
    whole = G722.encoder().encode(tone)
    encoder = G722.encoder()

    assert encoder.encode(tone[:2]) == b""
    assert encoder.encode(tone[2:4]) == whole[:1]
    assert encoder.encode(tone[4:]) == whole[1:]


def test_encoding_in_chunks_of_any_size_gives_the_same_bytes() -> None:
    tone = pcm(multitone(0.1))
    whole = G722.encoder().encode(tone)

    assert len(whole) == len(tone) // 4
    for chunk_samples in (1, 3, 7, 160, 320):
        assert encode_in_chunks(G722, tone, chunk_samples) == whole


def test_encoder_refuses_a_partial_sample() -> None:
    with pytest.raises(ValueError, match=r"^PCM has a partial sample: 3 bytes$"):
        G722.encoder().encode(b"\x00\x01\x02")
