"""Audio the tests make and compare: test signals, PCM bytes and samples, SNR, decoding in
packets, WAV files, and a channel that plays a reference in a loop."""

from __future__ import annotations

import wave
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from callrec.codecs import Codec
from tests.support.rtp import PACKET_BYTES


def tone(rate: int, seconds: float) -> npt.NDArray[np.int16]:
    """A deterministic two-tone signal (440 Hz and 1930 Hz) at ``rate``."""
    t = np.arange(round(seconds * rate)) / rate
    signal = 6000 * np.sin(2 * np.pi * 440 * t) + 2500 * np.sin(2 * np.pi * 1930 * t)
    return np.round(signal).astype(np.int16)


def speech_like_signal(seconds: float, rate: int, seed: int = 7) -> npt.NDArray[np.int16]:
    """A deterministic speech-like test signal: two tones, a chirp and some noise."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    x = (
        0.25 * np.sin(2 * np.pi * 440 * t)
        + 0.15 * np.sin(2 * np.pi * 1250 * t)
        + 0.1 * np.sin(2 * np.pi * (200 + 600 * t) * t)
        + 0.02 * rng.standard_normal(t.size)
    )
    return np.clip(x * 32767, -32768, 32767).astype(np.int16)


def pcm(samples: npt.ArrayLike) -> bytes:
    """Return int16 little-endian PCM bytes for ``samples``."""
    return np.asarray(samples).astype("<i2").tobytes()


def samples(pcm_bytes: bytes) -> npt.NDArray[np.int64]:
    """Return PCM bytes as wide integers, so differences cannot overflow."""
    return np.frombuffer(pcm_bytes, dtype="<i2").astype(np.int64)


def snr_db(reference: npt.NDArray[np.int64], actual: npt.NDArray[np.int64]) -> float:
    noise = actual - reference
    return float(10 * np.log10(np.sum(reference**2.0) / np.sum(noise**2.0)))


def decode_payloads(codec: Codec, payloads: Iterable[bytes]) -> bytes:
    """What one fresh decoder makes of ``payloads`` in order: what a reader must produce."""
    decoder = codec.decoder()
    return b"".join(decoder.decode(p) for p in payloads)


def decode_in_packets(codec: Codec, payload: bytes, packet_bytes: int = PACKET_BYTES) -> bytes:
    """Decode ``payload`` cut into packets, through one decoder, as an RTP stream arrives."""
    step = packet_bytes
    return decode_payloads(codec, (payload[i : i + step] for i in range(0, len(payload), step)))


def encode_in_chunks(codec: Codec, pcm: bytes, chunk_samples: int) -> bytes:
    """Encode ``pcm`` cut into chunks of ``chunk_samples`` samples, through one encoder."""
    encoder = codec.encoder()
    step = 2 * chunk_samples
    return b"".join(encoder.encode(pcm[i : i + step]) for i in range(0, len(pcm), step))


def write_wav(
    path: Path, audio: npt.ArrayLike | bytes, rate: int = 8000, *, channels: int = 1
) -> Path:
    """A 16-bit PCM WAV file of ``audio`` (samples, interleaved when ``channels`` is 2, or
    PCM bytes); returns its path."""
    data = audio if isinstance(audio, bytes) else pcm(audio)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data)
    return path


def read_wav(path: Path) -> tuple[npt.NDArray[np.int16], int]:
    """The samples (frames x channels when stereo) of a 16-bit PCM WAV file, and its rate."""
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2, f"{path} is not 16-bit"
        channels, rate = w.getnchannels(), w.getframerate()
        frames = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return (frames.reshape(-1, channels) if channels > 1 else frames), rate


def matches_looped(channel: npt.NDArray[np.int16], reference: npt.NDArray[np.int16]) -> int:
    """The channel's audio is the reference played in a loop; returns its sample count."""
    nonzero = np.flatnonzero(channel)
    assert nonzero.size, "channel is silent"
    body = channel[nonzero[0] : nonzero[-1] + 1]
    head = body[:PACKET_BYTES]
    starts = [
        k * PACKET_BYTES
        for k in range(len(reference) // PACKET_BYTES)
        if np.array_equal(reference[k * PACKET_BYTES : (k + 1) * PACKET_BYTES], head)
    ]
    assert starts, "channel audio is not the reference"
    looped = np.tile(reference, len(body) // len(reference) + 2)[starts[0] :]
    assert np.array_equal(body, looped[: len(body)])
    return len(body)
