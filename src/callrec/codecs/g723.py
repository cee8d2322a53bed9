"""G.723.1 at 6.3 and 5.3 kbit/s, RTP payload type 4, through FFmpeg.

Each frame is 30 ms (240 samples); its first byte's two low bits say its size: 24 bytes at
6.3 kbit/s, 20 at 5.3 kbit/s, 4 for a SID (comfort noise) frame, 1 for an untransmitted one.
A payload may hold several frames (RFC 3551 section 4.5.3). FFmpeg decodes all four kinds.
"""

from __future__ import annotations

from typing import Final

from .base import PCM_SAMPLE_WIDTH, Codec, Decoder, Encoder
from .ffmpeg import NARROWBAND_RATE, FfmpegContext, fit

G723_FRAME_SAMPLES: Final = 240
#: Frame size by the two low bits of its first byte.
G723_FRAME_BYTES: Final = (24, 20, 4, 1)
#: The bit rate of FFmpeg's encoder, the only one it has.
G723_ENCODER_BIT_RATE: Final = 6300


def g723_frames_by_length(payload_len: int) -> int:
    """The frames of a payload from its length alone (all the RTP clock can go by): whole
    24- or 20-byte frames, else a partial or SID-ended payload rounded up to 24 bytes."""
    for size in (24, 20):
        if payload_len % size == 0:
            return payload_len // size
    return -(-payload_len // 24)


class G723Decoder(Decoder):
    """Decodes one G.723.1 stream; keeps the filter state between payloads."""

    __slots__ = ("_ctx",)

    def __init__(self) -> None:
        self._ctx = FfmpegContext("g723_1", "r")

    def decode(self, payload: bytes) -> bytes:
        payload = bytes(payload)
        if not payload:
            return b""
        # As long as the RTP clock says (from the length), whatever the size bits say.
        samples = g723_frames_by_length(len(payload)) * G723_FRAME_SAMPLES
        return fit(self._ctx.decode(payload), samples)


class G723Encoder(Encoder):
    """Encodes one G.723.1 stream at 6.3 kbit/s, a 24-byte frame per 30 ms of PCM;
    :meth:`flush` codes a last partial frame padded with silence."""

    __slots__ = ("_ctx", "_pending")

    def __init__(self) -> None:
        self._ctx = FfmpegContext("g723_1", "w", bit_rate=G723_ENCODER_BIT_RATE)
        self._pending = b""

    def encode(self, pcm: bytes) -> bytes:
        if len(pcm) % PCM_SAMPLE_WIDTH:
            raise ValueError(f"PCM has a partial sample: {len(pcm)} bytes")
        data = self._pending + pcm
        frame = G723_FRAME_SAMPLES * PCM_SAMPLE_WIDTH
        whole = len(data) - len(data) % frame
        self._pending = data[whole:]
        return b"".join(self._ctx.encode(data[i : i + frame]) for i in range(0, whole, frame))

    def flush(self) -> bytes:
        if not self._pending:
            return b""
        frame = G723_FRAME_SAMPLES * PCM_SAMPLE_WIDTH
        pending, self._pending = self._pending, b""
        return self._ctx.encode(pending + bytes(frame - len(pending)))


class G723Codec(Codec):
    """G.723.1, RTP payload type 4 (SDP name "G723")."""

    __slots__ = ()

    name = "G723"
    payload_type = 4
    clock_rate = NARROWBAND_RATE
    sample_rate = NARROWBAND_RATE
    # Frame sizes are read from each frame's first byte: a payload is decoded on its own.
    concatenable = False
    ptime = 30

    def decoder(self) -> Decoder:
        return G723Decoder()

    def encoder(self) -> Encoder:
        return G723Encoder()

    def timestamp_units(self, payload_len: int) -> int:
        return g723_frames_by_length(payload_len) * G723_FRAME_SAMPLES


G723: Final = G723Codec()
