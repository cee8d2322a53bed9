"""G.729 (and Annexes A and B, which decode alike), RTP payload type 18, through FFmpeg.

An RTP payload holds 10-byte frames of 10 ms (8-byte frames at 6.4 kbit/s, Annex D) and, with
Annex B's silence suppression, may end with one 2-byte SID frame (RFC 3551 section 4.5.6).
FFmpeg decodes the speech frames but has no comfort-noise generator for SID frames: those are
written as 10 ms of silence, so the recording keeps the phone's timing. FFmpeg has no G.729
encoder, so neither has callrec.
"""

from __future__ import annotations

from typing import Final

from ..exceptions import UnsupportedCodecError
from .base import Codec, Decoder, Encoder
from .ffmpeg import NARROWBAND_RATE, FfmpegContext, fit

#: Bytes of one 8 kbit/s frame, and the samples of any frame (10 ms).
G729_FRAME_BYTES: Final = 10
G729_FRAME_SAMPLES: Final = 80
#: Bytes of an Annex D (6.4 kbit/s) frame and of an Annex B SID frame.
G729D_FRAME_BYTES: Final = 8
G729_SID_BYTES: Final = 2


def g729_frames(payload_len: int) -> int:
    """The 10 ms frames in a payload: whole frames, plus one for a trailing SID (or a
    partial frame, which is decoded as the silence it cannot be)."""
    if payload_len % G729D_FRAME_BYTES == 0 and payload_len % G729_FRAME_BYTES:
        return payload_len // G729D_FRAME_BYTES
    return -(-payload_len // G729_FRAME_BYTES)


class G729Decoder(Decoder):
    """Decodes one G.729 stream frame by frame; keeps the filter state between payloads."""

    __slots__ = ("_ctx",)

    def __init__(self) -> None:
        self._ctx = FfmpegContext("g729", "r")

    def decode(self, payload: bytes) -> bytes:
        payload = bytes(payload)
        frames = g729_frames(len(payload))
        if frames == 0:
            return b""
        if len(payload) % G729_FRAME_BYTES == 0 or len(payload) % G729D_FRAME_BYTES == 0:
            # Whole frames of one kind: FFmpeg splits the packet itself.
            return fit(self._ctx.decode(payload), frames * G729_FRAME_SAMPLES)
        whole = len(payload) - len(payload) % G729_FRAME_BYTES
        speech = self._ctx.decode(payload[:whole]) if whole else b""
        return fit(speech, (frames - 1) * G729_FRAME_SAMPLES) + bytes(2 * G729_FRAME_SAMPLES)


class G729Codec(Codec):
    """G.729, G.729A and G.729B at 8 kbit/s, RTP payload type 18."""

    __slots__ = ()

    name = "G729"
    payload_type = 18
    clock_rate = NARROWBAND_RATE
    sample_rate = NARROWBAND_RATE
    # A SID frame joined to the next payload would no longer end a packet.
    concatenable = False

    def decoder(self) -> Decoder:
        return G729Decoder()

    def encoder(self) -> Encoder:
        raise UnsupportedCodecError("FFmpeg has no G.729 encoder: callrec can only decode G.729")

    def timestamp_units(self, payload_len: int) -> int:
        return g729_frames(payload_len) * G729_FRAME_SAMPLES


G729: Final = G729Codec()
