"""G.711 A-law (PCMA) and mu-law (PCMU): one byte per 8 kHz sample, no state.

Both directions are table lookups. The tables are built once at import by the reference
algorithms of ITU-T G.711 as written in the ITU-T G.191 software tools (``alaw_compress``,
``alaw_expand``, ``ulaw_compress``, ``ulaw_expand``), vectorised with numpy over every input:
256 codes to decode, and all 65536 int16 values (indexed by their uint16 bit pattern) to encode.
"""

from __future__ import annotations

from typing import ClassVar, Final, TypeVar

import numpy as np
import numpy.typing as npt

from .base import PCM_SAMPLE_WIDTH, Codec, Decoder, Encoder

_Scalar = TypeVar("_Scalar", bound=np.generic)

#: Both G.711 laws sample at 8 kHz, and the RTP clock is the sample clock (RFC 3551).
G711_RATE: Final = 8000

#: Every possible code byte, and every int16 sample in the order of its uint16 bit pattern.
_CODES = np.arange(256, dtype=np.int32)
_SAMPLES = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)

#: A-law is sent with its even bits inverted, so that silence has line transitions.
_ALAW_TOGGLE = 0x55
#: Mu-law is sent with all bits inverted.
_ULAW_TOGGLE = 0xFF
#: Mu-law adds this bias to the 14-bit magnitude so that segment edges fall on powers of two.
_ULAW_BIAS = 33


def _ones_complement_magnitude(samples: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    # G.191 folds negative samples with ~x rather than -x, so -1 lands in the same step as 0.
    return np.where(samples < 0, ~samples, samples)


def _alaw_decode_table() -> npt.NDArray[np.int16]:
    toggled = _CODES ^ _ALAW_TOGGLE
    exponent = (toggled >> 4) & 0x7
    mantissa = toggled & 0xF
    # Above segment 0 the mantissa has an implicit leading 1; "+ 8" is half a quantisation step.
    magnitude = ((mantissa + np.where(exponent > 0, 16, 0)) << 4) + 8
    magnitude = magnitude << np.maximum(exponent - 1, 0)
    linear = np.where(toggled & 0x80, magnitude, -magnitude)
    return _read_only(linear.astype("<i2"))


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    magnitude = _ones_complement_magnitude(_SAMPLES) >> 4  # A-law codes 12 bits: 0..2047
    # The segment is how many of the boundaries 16, 32, ..., 1024 the magnitude has reached.
    exponent = np.searchsorted(16 << np.arange(7), magnitude, side="right").astype(np.int32)
    mantissa = (magnitude >> np.maximum(exponent - 1, 0)) & 0xF
    code = (exponent << 4) | mantissa | np.where(_SAMPLES >= 0, 0x80, 0)
    return _read_only((code ^ _ALAW_TOGGLE).astype(np.uint8))


def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    inverted = _CODES ^ _ULAW_TOGGLE
    exponent = (inverted >> 4) & 0x7
    mantissa = inverted & 0xF
    step = 8 << exponent
    magnitude = (0x80 << exponent) + step * mantissa + step // 2 - 4 * _ULAW_BIAS
    linear = np.where(_CODES & 0x80, magnitude, -magnitude)
    return _read_only(linear.astype("<i2"))


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    magnitude = _ones_complement_magnitude(_SAMPLES) >> 2  # mu-law codes 14 bits: 0..8191
    biased = np.minimum(magnitude + _ULAW_BIAS, 0x1FFF)
    # Segment 1 ends at 64; each further segment doubles: boundaries 64, 128, ..., 4096.
    segment = np.searchsorted(64 << np.arange(7), biased, side="right").astype(np.int32) + 1
    high_nibble = 8 - segment
    low_nibble = 0xF - ((biased >> segment) & 0xF)
    code = (high_nibble << 4) | low_nibble | np.where(_SAMPLES >= 0, 0x80, 0)
    return _read_only(code.astype(np.uint8))


def _read_only(table: npt.NDArray[_Scalar]) -> npt.NDArray[_Scalar]:
    # The tables are shared by every stream; nothing may write into them.
    table.flags.writeable = False
    return table


#: Code byte -> int16 little-endian sample.
ALAW_DECODE_TABLE: Final = _alaw_decode_table()
ULAW_DECODE_TABLE: Final = _ulaw_decode_table()
#: uint16 bit pattern of an int16 sample -> code byte.
ALAW_ENCODE_TABLE: Final = _alaw_encode_table()
ULAW_ENCODE_TABLE: Final = _ulaw_encode_table()


class G711Decoder(Decoder):
    """Decodes G.711 payloads through a 256-entry table."""

    __slots__ = ("_table",)

    def __init__(self, table: npt.NDArray[np.int16]) -> None:
        self._table = table

    def decode(self, payload: bytes) -> bytes:
        return self._table[np.frombuffer(payload, dtype=np.uint8)].tobytes()


class G711Encoder(Encoder):
    """Encodes PCM to G.711 through a 65536-entry table."""

    __slots__ = ("_table",)

    def __init__(self, table: npt.NDArray[np.uint8]) -> None:
        self._table = table

    def encode(self, pcm: bytes) -> bytes:
        if len(pcm) % PCM_SAMPLE_WIDTH:
            raise ValueError(f"PCM has a partial sample: {len(pcm)} bytes")
        # The uint16 view of an int16 sample is its index into the table.
        indices: npt.NDArray[np.uint16] = np.frombuffer(pcm, dtype="<u2")
        return self._table[indices].tobytes()


class _G711Codec(Codec):
    __slots__ = ()

    clock_rate = G711_RATE
    sample_rate = G711_RATE
    _decode_table: ClassVar[npt.NDArray[np.int16]]
    _encode_table: ClassVar[npt.NDArray[np.uint8]]

    def decoder(self) -> Decoder:
        return G711Decoder(self._decode_table)

    def encoder(self) -> Encoder:
        return G711Encoder(self._encode_table)

    def timestamp_units(self, payload_len: int) -> int:
        # One byte per sample, and the RTP clock is the sample clock.
        return payload_len


class PcmaCodec(_G711Codec):
    """G.711 A-law, RTP payload type 8."""

    __slots__ = ()

    name = "PCMA"
    payload_type = 8
    _decode_table = ALAW_DECODE_TABLE
    _encode_table = ALAW_ENCODE_TABLE


class PcmuCodec(_G711Codec):
    """G.711 mu-law, RTP payload type 0."""

    __slots__ = ()

    name = "PCMU"
    payload_type = 0
    _decode_table = ULAW_DECODE_TABLE
    _encode_table = ULAW_ENCODE_TABLE


PCMA: Final = PcmaCodec()
PCMU: Final = PcmuCodec()
