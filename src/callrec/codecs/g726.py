"""G.726 ADPCM at 16, 24, 32 and 40 kbit/s (2 to 5 bits a sample), through FFmpeg.

RFC 3551 ("G726-32") packs the first code into the least significant bits of an octet;
ITU-T I.366.2 AAL2 ("AAL2-G726-32") packs it into the most significant ones. FFmpeg decodes
the first as ``g726le`` and the second as ``g726``, as its own RTP depacketiser does. G.726 has
no static RTP payload type any more (RFC 3551 withdrew type 2, which many phones still use
for G726-32), so a stream takes whichever dynamic type the phone sends.
"""

from __future__ import annotations

from typing import ClassVar, Final

from .base import PCM_SAMPLE_WIDTH, Codec, Decoder, Encoder
from .ffmpeg import NARROWBAND_RATE, FfmpegContext, fit

#: Bits a sample -> kbit/s at 8 kHz.
G726_RATES: Final = {2: 16, 3: 24, 4: 32, 5: 40}
#: Payload type 2 was G721/G726-32 in RFC 1890; phones still send it, so it is the one a
#: stream expects before it sees another dynamic type.
G726_LEGACY_PAYLOAD_TYPE: Final = 2


class G726Decoder(Decoder):
    """Decodes one G.726 stream; keeps the ADPCM state between payloads."""

    __slots__ = ("_bits", "_ctx")

    def __init__(self, ffmpeg_codec: str, bits: int) -> None:
        self._bits = bits
        self._ctx = FfmpegContext(ffmpeg_codec, "r", {"bits_per_coded_sample": str(bits)})

    def decode(self, payload: bytes) -> bytes:
        if not payload:
            return b""
        return fit(self._ctx.decode(bytes(payload)), len(payload) * 8 // self._bits)


class G726Encoder(Encoder):
    """Encodes one G.726 stream. FFmpeg's encoder takes frames of thousands of samples, so
    PCM is held until a frame is full; :meth:`flush` codes what is left."""

    __slots__ = ("_bits", "_ctx", "_pending")

    def __init__(self, ffmpeg_codec: str, bits: int) -> None:
        self._bits = bits
        self._ctx = FfmpegContext(ffmpeg_codec, "w", bit_rate=bits * NARROWBAND_RATE)
        self._pending = b""

    def encode(self, pcm: bytes) -> bytes:
        if len(pcm) % PCM_SAMPLE_WIDTH:
            raise ValueError(f"PCM has a partial sample: {len(pcm)} bytes")
        data = self._pending + pcm
        frame = self._ctx.frame_size * PCM_SAMPLE_WIDTH
        whole = len(data) - len(data) % frame
        self._pending = data[whole:]
        return b"".join(self._ctx.encode(data[i : i + frame]) for i in range(0, whole, frame))

    def flush(self) -> bytes:
        samples = len(self._pending) // PCM_SAMPLE_WIDTH
        if not samples:
            return b""
        frame = self._ctx.frame_size * PCM_SAMPLE_WIDTH
        coded = self._ctx.encode(self._pending + bytes(frame - len(self._pending)))
        self._pending = b""
        # ADPCM codes sample by sample: the padding's codes are simply cut off.
        return coded[: -(-samples * self._bits // 8)]


class G726Codec(Codec):
    """G.726 at one bit rate and one bit order."""

    __slots__ = ()

    clock_rate = NARROWBAND_RATE
    sample_rate = NARROWBAND_RATE
    payload_type = G726_LEGACY_PAYLOAD_TYPE
    dynamic_payload_type = True
    #: Bits a sample: 2, 3, 4 or 5.
    bits: ClassVar[int]
    #: FFmpeg's decoder for the bit order.
    ffmpeg_codec: ClassVar[str]

    def decoder(self) -> Decoder:
        return G726Decoder(self.ffmpeg_codec, self.bits)

    def encoder(self) -> Encoder:
        return G726Encoder(self.ffmpeg_codec, self.bits)

    def timestamp_units(self, payload_len: int) -> int:
        return payload_len * 8 // self.bits


def _g726(bits: int, *, aal2: bool) -> G726Codec:
    name = f"{'AAL2-' if aal2 else ''}G726-{G726_RATES[bits]}"
    cls = type(
        name.replace("-", "_"),
        (G726Codec,),
        {
            "__slots__": (),
            "__doc__": f"G.726 at {G726_RATES[bits]} kbit/s, {'AAL2' if aal2 else 'RFC 3551'} "
            "bit order.",
            "name": name,
            "bits": bits,
            "ffmpeg_codec": "g726" if aal2 else "g726le",
        },
    )
    return cls()  # type: ignore[no-any-return]


#: RFC 3551 bit order, the one SDP's "G726-nn" names.
G726_16: Final = _g726(2, aal2=False)
G726_24: Final = _g726(3, aal2=False)
G726_32: Final = _g726(4, aal2=False)
G726_40: Final = _g726(5, aal2=False)
#: AAL2 bit order, SDP's "AAL2-G726-nn".
AAL2_G726_16: Final = _g726(2, aal2=True)
AAL2_G726_24: Final = _g726(3, aal2=True)
AAL2_G726_32: Final = _g726(4, aal2=True)
AAL2_G726_40: Final = _g726(5, aal2=True)

G726_CODECS: Final = (
    G726_16, G726_24, G726_32, G726_40, AAL2_G726_16, AAL2_G726_24, AAL2_G726_32, AAL2_G726_40,
)  # fmt: skip
