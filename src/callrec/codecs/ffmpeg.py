"""FFmpeg's decoders and encoders through PyAV, whose wheels bundle FFmpeg (no system package).

G.726, G.729 and G.723.1 are decoded by FFmpeg itself, so a recording is what FFmpeg makes of
the same payloads, sample for sample. One codec context per stream: every one of these codecs
carries predictor or filter state from one frame to the next.

PyAV is imported when the first such context is made: loading FFmpeg takes about half a
second and 20 MB, which a server that only ever sees G.711 and G.722 need not pay.
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np

from .base import PCM_SAMPLE_WIDTH

#: Every codec of this module samples at 8 kHz and stamps RTP at its sample clock.
NARROWBAND_RATE: Final = 8000


class FfmpegContext:
    """One FFmpeg codec context, mono at 8 kHz, fed and drained as int16 PCM bytes."""

    __slots__ = ("_ctx", "_error", "_packet")

    def __init__(
        self,
        codec: str,
        mode: Literal["r", "w"],
        options: dict[str, str] | None = None,
        bit_rate: int = 0,
    ) -> None:
        import av  # here, not at the top: see the module's doc
        import av.error

        self._packet = av.Packet
        self._error = av.error.FFmpegError
        ctx = av.CodecContext.create(codec, mode)
        assert isinstance(ctx, av.AudioCodecContext)
        ctx.sample_rate = NARROWBAND_RATE
        ctx.layout = "mono"
        if mode == "w":
            ctx.format = "s16"
        if bit_rate:
            ctx.bit_rate = bit_rate
        if options:
            ctx.options = options
        ctx.open()
        self._ctx = ctx

    @property
    def frame_size(self) -> int:
        """Samples per frame an encoder takes (0 when it takes any number)."""
        return self._ctx.frame_size

    def decode(self, data: bytes) -> bytes | None:
        """FFmpeg's PCM for one packet, or None when FFmpeg refuses the packet."""
        try:
            frames = self._ctx.decode(self._packet(data))
        except self._error:
            return None
        # Mono planar and packed int16 are the same bytes; a plane may be padded past the end.
        parts = [bytes(f.planes[0])[: f.samples * PCM_SAMPLE_WIDTH] for f in frames]
        pcm = parts[0] if len(parts) == 1 else b"".join(parts)
        return _little_endian(pcm)

    def encode(self, pcm: bytes) -> bytes:
        """The packets FFmpeg makes of one frame of PCM (of :attr:`frame_size` samples)."""
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.int16, copy=False)
        import av

        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = NARROWBAND_RATE
        return b"".join(bytes(p) for p in self._ctx.encode(frame))


def _little_endian(pcm: bytes) -> bytes:
    if np.little_endian:
        return pcm
    return np.frombuffer(pcm, dtype=np.int16).astype("<i2").tobytes()


def fit(pcm: bytes | None, samples: int) -> bytes:
    """``pcm`` cut or padded with silence to exactly ``samples`` samples.

    A recording's length follows the RTP clock, so a payload FFmpeg refuses (or decodes to
    another length than its size promises) still takes its place in time, as silence.
    """
    size = samples * PCM_SAMPLE_WIDTH
    if pcm is None:
        return bytes(size)
    if len(pcm) == size:
        return pcm
    return pcm[:size] + bytes(max(0, size - len(pcm)))
