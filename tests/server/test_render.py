"""The phone source's batch decode: one decoder call per run of payloads, one write per pump,
the same PCM as one decode and one write per packet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from callrec.codecs import CODECS, G729, Codec
from callrec.engine.files import write_frames
from callrec.engine.ports import PortRange
from callrec.media import wav as wav_module
from callrec.media.wav import WavTooLargeError, WavWriter
from callrec.rtp.packet import RtpPacket
from callrec.rtp.stream import MediaStream, Silence
from callrec.server.receiver import MediaReceiver
from callrec.server.source import PhoneSource, render
from tests.support.data import CODEC_DATA


def payloads(codec: Codec, count: int) -> list[bytes]:
    if codec is G729:  # FFmpeg has no G.729 encoder: committed frames, 20 ms a payload
        encoded = (CODEC_DATA / "noise.g729").read_bytes()[: 20 * count]
    else:
        rate = codec.sample_rate
        t = np.arange(rate * codec.ptime // 1000 * count) / rate
        pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()
        encoder = codec.encoder()
        encoded = encoder.encode(pcm) + encoder.flush()
    step = len(encoded) // count
    return [encoded[i * step : (i + 1) * step] for i in range(count)]


@pytest.mark.parametrize("name", sorted(CODECS))
def test_batch_decode_equals_decode_per_packet(name: str) -> None:
    codec = CODECS[name]
    p = payloads(codec, 12)
    pieces: list[bytes | Silence] = [*p[:5], Silence(160), p[5], Silence(80), *p[6:]]
    per_packet = codec.decoder()
    expected = b"".join(
        per_packet.decode(x)
        if isinstance(x, bytes)
        else codec.silence(codec.samples_for_timestamp(x.units))
        for x in pieces
    )
    parts = render(pieces, codec, codec.decoder())
    # Three runs of audio and two silences; frame codecs decode each payload on its own.
    assert len(parts) == (5 if codec.concatenable else 14)
    assert b"".join(parts) == expected


@pytest.mark.parametrize("name", ["G729", "G723"])
def test_frame_codecs_are_decoded_one_payload_at_a_time(name: str) -> None:
    """A G.729 payload may end with a 2-byte SID frame: joined to the next payload it would
    shift every frame after it. Decoded one by one, each keeps its place."""
    codec = CODECS[name]
    p = payloads(codec, 4)
    if codec is G729:
        p[1] += bytes([0x5A, 0xC0])
    expected = b"".join(_decode_each(codec, p))
    assert b"".join(render(list(p), codec, codec.decoder())) == expected
    assert len(expected) == 2 * sum(codec.timestamp_units(len(x)) for x in p)


def _decode_each(codec: Codec, payloads: list[bytes]) -> list[bytes]:
    decoder = codec.decoder()
    return [decoder.decode(x) for x in payloads]


def source(codec: Codec) -> PhoneSource:
    ports = PortRange("127.0.0.1", 0, 0)
    stream = MediaStream(
        payload_type=codec.payload_type,
        clock_rate=codec.clock_rate,
        timestamp_units=codec.timestamp_units,
        peer_ip="127.0.0.1",
    )
    return PhoneSource(
        codec=codec, stream=stream, sock=ports.bind(), ports=ports, receiver=MediaReceiver()
    )


def test_pump_at_the_size_limit_keeps_the_packets_that_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Room for 2.5 packets of PCM: the pump keeps the first two, as one write per packet did.
    monkeypatch.setattr(wav_module, "max_data_size", lambda channels: 800)
    codec = CODECS["PCMA"]
    s = source(codec)
    writer = WavWriter(tmp_path / "a.wav", sample_rate=codec.sample_rate)
    for i, payload in enumerate(payloads(codec, 4)):
        data = RtpPacket(
            payload_type=8, sequence_number=i, timestamp=160 * i, ssrc=7, payload=payload
        ).serialize()
        s.stream.receive(data, "127.0.0.1", 0.02 * i)
    with pytest.raises(WavTooLargeError):
        write_frames((writer,), s.pump(1.0), s.cut_points)  # past the start's hold
    assert writer.duration == pytest.approx(0.04)
    writer.close()
    s.close()
