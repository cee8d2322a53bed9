"""The audio of a load run: a loop encoded once, that every simulated call sends.

:func:`speech_signal` is the built-in signal (sound in every 20 ms frame, which verification
relies on); :class:`AudioLoop` holds its payloads (or a WAV file's, ``--audio``) per codec,
so that sending a packet copies bytes and encodes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from callrec.codecs import Codec, get_codec
from callrec.sim.loadrun import PACKET_MS, LoadError, LoadOptions

#: Length of the audio loop. Long enough that a shifted file cannot pass for a right one.
LOOP_SECONDS: Final = 10.0

Pcm = npt.NDArray[np.int16]


def speech_signal(seconds: float, rate: int, seed: int = 7) -> Pcm:
    """A deterministic speech-like signal with sound in every 20 ms frame: tones, a warble
    and a little noise. No frame decodes to digital silence, which verification relies on."""
    t = np.arange(round(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    x = (
        0.22 * np.sin(2 * np.pi * 440 * t)
        + 0.12 * np.sin(2 * np.pi * 1250 * t)
        + 0.10 * np.sin(2 * np.pi * (300 + 200 * np.sin(2 * np.pi * 0.5 * t)) * t)
        + 0.02 * rng.standard_normal(t.size)
    )
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)  # syllable-like loudness changes
    return np.asarray(np.clip(x * envelope * 32767, -32768, 32767), dtype=np.int16)


@dataclass(frozen=True, slots=True)
class AudioLoop:
    """The payloads every call sends, in a loop: packet ``i`` carries ``payloads[i % n]``."""

    codec: Codec
    payloads: tuple[bytes, ...]
    #: RTP timestamp units per packet (G.722: 160 at its 8 kHz RTP clock).
    units: int
    #: PCM samples per packet at the codec's sample rate.
    frame_samples: int

    @classmethod
    def build(cls, codec: Codec, pcm: npt.ArrayLike | None = None) -> AudioLoop:
        """Encode ``pcm`` (default: :func:`speech_signal` of :data:`LOOP_SECONDS`) once."""
        from callrec.sim.phone import build_packets

        if pcm is None:
            pcm = speech_signal(LOOP_SECONDS, codec.sample_rate)
        packets = build_packets(pcm, codec, ssrc=0, packet_ms=PACKET_MS)
        if not packets:
            raise LoadError("the audio loop is empty")
        payloads = tuple(p.payload for p in packets)
        frame_samples = codec.sample_rate * PACKET_MS // 1000
        # Verification tells a lost packet (silence written in its place) from audio by the
        # silence: a frame that decodes to digital silence would make that ambiguous.
        decoder = codec.decoder()
        for i, payload in enumerate(payloads):
            if not any(decoder.decode(payload)):
                raise LoadError(
                    f"the audio loop is digital silence at {i * PACKET_MS} ms; verification "
                    "needs sound in every 20 ms frame"
                )
        return cls(codec, payloads, codec.timestamp_units(len(payloads[0])), frame_samples)

    @classmethod
    def for_options(cls, options: LoadOptions) -> AudioLoop:
        codec = get_codec(options.codec)
        if options.audio is None:
            return cls.build(codec)
        from callrec.sim.phone import load_audio

        pcm = load_audio(options.audio, codec.sample_rate)
        return cls.build(codec, pcm[: round(LOOP_SECONDS * codec.sample_rate)])

    def payload(self, index: int) -> bytes:
        return self.payloads[index % len(self.payloads)]
