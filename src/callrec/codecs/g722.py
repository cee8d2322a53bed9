"""G.722 (RTP payload type 9) at 64 kbit/s: callrec's own C decoder, sippy libg722's encoder.

G.722 is ADPCM over two sub-bands: every byte depends on the predictor state left by the
bytes before it, so each stream needs its own decoder, fed in order.

The server decodes every G.722 packet of every call, and libg722's decoder was about two
thirds of the server's CPU per G.722 packet: :mod:`callrec.codecs._g722` decodes the same
samples as FFmpeg and libg722 in under half the time (docs/performance.md). Encoding is only
the simulator's and the tests' work, so it stays libg722's.
"""

from __future__ import annotations

from typing import Final

import G722 as libg722
import numpy as np
import numpy.typing as npt

from ._g722 import Decoder as NativeDecoder
from .base import PCM_SAMPLE_WIDTH, Codec, Decoder, Encoder

#: G.722 samples audio at 16 kHz.
G722_SAMPLE_RATE: Final = 16000
#: RFC 3551 section 4.5.2: the RTP clock of G.722 runs at 8 kHz although the codec samples at
#: 16 kHz. RFC 1890 got it wrong and every implementation since keeps the error.
G722_RTP_CLOCK_RATE: Final = 8000
#: Mode 1 of G.722, the only one RTP payload type 9 carries.
G722_BIT_RATE: Final = 64000
#: At 64 kbit/s one byte carries one sample pair (one low-band and one high-band code).
G722_SAMPLES_PER_BYTE: Final = G722_SAMPLE_RATE * 8 // G722_BIT_RATE


class G722Decoder(Decoder):
    """Decodes one G.722 stream; keeps the ADPCM state between payloads."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = NativeDecoder()

    def decode(self, payload: bytes) -> bytes:
        # Takes any buffer and returns little-endian bytes itself: no copy on either side.
        return self._state.decode(payload)


class G722Encoder(Encoder):
    """Encodes one G.722 stream; keeps the ADPCM state between calls.

    A byte codes a pair of samples, so an odd sample at the end of a call is held back and
    coded with the first sample of the next call.
    """

    __slots__ = ("_pending", "_state")

    def __init__(self) -> None:
        self._state = libg722.G722(G722_SAMPLE_RATE, G722_BIT_RATE)
        self._pending: npt.NDArray[np.int16] = np.zeros(0, dtype=np.int16)

    def encode(self, pcm: bytes) -> bytes:
        if len(pcm) % PCM_SAMPLE_WIDTH:
            raise ValueError(f"PCM has a partial sample: {len(pcm)} bytes")
        samples = np.concatenate((self._pending, np.frombuffer(pcm, dtype="<i2")))
        whole = len(samples) - len(samples) % G722_SAMPLES_PER_BYTE
        self._pending = samples[whole:]
        return bytes(self._state.encode(samples[:whole].astype(np.int16, copy=False)))


class G722Codec(Codec):
    """G.722 at 64 kbit/s, RTP payload type 9."""

    __slots__ = ()

    name = "G722"
    payload_type = 9
    clock_rate = G722_RTP_CLOCK_RATE
    sample_rate = G722_SAMPLE_RATE

    def decoder(self) -> Decoder:
        return G722Decoder()

    def encoder(self) -> Encoder:
        return G722Encoder()

    def timestamp_units(self, payload_len: int) -> int:
        # 160 bytes are 320 samples at 16 kHz but only 160 ticks of the 8 kHz RTP clock.
        return payload_len * G722_SAMPLES_PER_BYTE * self.clock_rate // self.sample_rate


G722: Final = G722Codec()
