"""The one small interface every codec implements.

A :class:`Codec` describes a payload format (its name, RTP payload type and clocks) and makes
a fresh :class:`Decoder` or :class:`Encoder` per stream, because some codecs (G.722) carry
state from one packet to the next. PCM on our side is always 16-bit signed little-endian mono
at :attr:`Codec.sample_rate`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

#: Bytes per PCM sample (int16).
PCM_SAMPLE_WIDTH = 2


class Decoder(ABC):
    """Turns the payloads of one RTP stream into PCM, in arrival order."""

    __slots__ = ()

    @abstractmethod
    def decode(self, payload: bytes) -> bytes:
        """Return the int16 little-endian mono PCM carried by one RTP payload."""


class Encoder(ABC):
    """Turns PCM into payload bytes for one outgoing stream (the phone simulator, tests)."""

    __slots__ = ()

    @abstractmethod
    def encode(self, pcm: bytes) -> bytes:
        """Return the payload bytes for int16 little-endian mono PCM at the codec's rate."""

    def flush(self) -> bytes:
        """Return what an encoder that codes whole frames still holds, padded with silence
        to a frame (nothing for sample-by-sample codecs)."""
        return b""


class Codec(ABC):
    """One payload format. Instances hold no state, so one shared instance per codec is safe.

    The describing attributes are class constants: assigning them through an instance fails.
    """

    __slots__ = ()

    #: Canonical name, as in SDP ``a=rtpmap`` ("PCMA", "PCMU", "G722").
    name: ClassVar[str]
    #: Static RTP payload type from RFC 3551.
    payload_type: ClassVar[int]
    #: Rate of the RTP timestamp clock, in Hz.
    clock_rate: ClassVar[int]
    #: Rate of the decoded PCM, in Hz.
    sample_rate: ClassVar[int]
    #: True when payloads joined end to end decode as the payloads one by one would (a plain
    #: bit stream: G.711, G.722, G.726), so a run of them may be decoded in one call. False
    #: for frame codecs whose payload ends carry meaning (G.729's SID, G.723.1's frame sizes).
    concatenable: ClassVar[bool] = True
    #: True when the codec has no static RTP payload type (G.726): :attr:`payload_type` is
    #: only the likeliest one, and a stream takes the dynamic type the phone actually sends.
    dynamic_payload_type: ClassVar[bool] = False
    #: Milliseconds of audio in one packet a phone usually sends (the simulator's packets).
    ptime: ClassVar[int] = 20

    @abstractmethod
    def decoder(self) -> Decoder:
        """Return a fresh decoder for one stream."""

    @abstractmethod
    def encoder(self) -> Encoder:
        """Return a fresh encoder for one stream."""

    @abstractmethod
    def timestamp_units(self, payload_len: int) -> int:
        """Return the RTP timestamp units covered by a payload of ``payload_len`` bytes."""

    def samples_for_timestamp(self, units: int) -> int:
        """Return the number of PCM samples covering ``units`` RTP timestamp units."""
        return units * self.sample_rate // self.clock_rate

    def silence(self, samples: int) -> bytes:
        """Return ``samples`` samples of PCM silence, to fill a gap in a recording."""
        if samples < 0:
            raise ValueError(f"negative sample count {samples}")
        return bytes(samples * PCM_SAMPLE_WIDTH)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pt={self.payload_type}>"
