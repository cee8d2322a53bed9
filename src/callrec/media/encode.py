"""PCM to FLAC, Opus and MP3 in-process, by the encoders PyAV's wheels bundle (libavcodec's
FLAC, libopus and libmp3lame): no FFmpeg program needed.

Two ways out. :func:`encode_file` writes a file PyAV can seek in, so every header is complete.
:func:`encode_stream` yields the encoded bytes as they come, for a download that starts at
once and never holds the whole file; what a muxer would go back to fill in at the end is
written up front from the length the caller knows:

* FLAC's STREAMINFO gets its total samples (players show the duration);
* MP3 gets a Xing/LAME "Info" frame with the frame count, the encoder delay and the end
  padding, so that decoders (FFmpeg, mpg123 and so libsndfile) trim to exactly the input's
  length instead of adding ~1,100 samples of delay and up to a frame of padding;
* Ogg Opus needs nothing: pre-skip and the last page's granule position already give its
  exact length.

PyAV is imported when an encoder is made (loading FFmpeg costs half a second and 20 MB; see
:mod:`callrec.codecs.ffmpeg`).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from callrec.exceptions import CallrecError

if TYPE_CHECKING:
    from av.audio.stream import AudioStream
    from av.container import OutputContainer


#: A block of int16 PCM, channels interleaved.
Samples = np.ndarray[Any, np.dtype[np.int16]]


class EncodeError(CallrecError):
    """The encoder is missing from this PyAV build, or refused the audio."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Encoding:
    """One output format: an FFmpeg encoder, the container it goes in, its settings."""

    #: FFmpeg's encoder name (``flac``, ``libopus``, ``libmp3lame``).
    codec: str
    #: FFmpeg's muxer name (``flac``, ``ogg``, ``opus``, ``mp3``).
    container: str
    #: Bits per second; 0 for the encoder's choice (lossless FLAC).
    bit_rate: int = 0
    #: Encoder options, as FFmpeg's ``-option value``.
    options: tuple[tuple[str, str], ...] = ()


FLAC: Final = Encoding(codec="flac", container="flac")
#: 32 kbit/s Opus in VoIP mode is transparent for narrow- and wide-band telephone speech.
OPUS_FILE: Final = Encoding(
    codec="libopus", container="opus", bit_rate=32_000, options=(("application", "voip"),)
)
#: Downloads trade a little of that for size.
OPUS_DOWNLOAD: Final = Encoding(
    codec="libopus", container="ogg", bit_rate=24_000, options=(("application", "voip"),)
)
MP3: Final = Encoding(codec="libmp3lame", container="mp3", bit_rate=64_000)


def encode_file(
    blocks: Iterable[Samples],
    output: Path,
    *,
    encoding: Encoding,
    sample_rate: int,
    channels: int = 1,
) -> None:
    """Encode ``blocks`` (int16, interleaved) into a new file at ``output``."""
    import av

    try:
        container = av.open(str(output), "w", format=encoding.container)
    except av.error.FFmpegError as exc:
        raise EncodeError(f"cannot write {output.name}: {exc}") from exc
    with container:
        stream = _add_stream(container, encoding, sample_rate, channels)
        try:
            for frame in _frames(blocks, sample_rate, channels):
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        except av.error.FFmpegError as exc:
            raise EncodeError(f"{encoding.codec} could not encode the audio: {exc}") from exc


def encode_stream(
    blocks: Iterable[Samples],
    *,
    encoding: Encoding,
    sample_rate: int,
    channels: int,
    frames: int,
) -> Iterator[bytes]:
    """The encoded stream of ``blocks`` (int16, interleaved; ``frames`` samples per channel
    in all), piece by piece: about one piece per block.

    The encoder is opened before the first piece is asked for, so a missing encoder raises
    :class:`EncodeError` at the call, not in the middle of a response.
    """
    if encoding.codec == "libmp3lame":
        mp3 = _Mp3Stream(encoding, sample_rate, channels, frames)
        return mp3.run(blocks)
    return _muxed_stream(blocks, encoding, sample_rate, channels, frames)


# -- PyAV plumbing -------------------------------------------------------------------------


def _layout(channels: int) -> str:
    if channels == 1:
        return "mono"
    if channels == 2:
        return "stereo"
    raise EncodeError(f"cannot encode {channels} channels (mono or stereo only)")


def _add_stream(
    container: OutputContainer, encoding: Encoding, sample_rate: int, channels: int
) -> AudioStream:
    import av

    try:
        stream = container.add_stream(encoding.codec, rate=sample_rate, layout=_layout(channels))
    except (av.error.FFmpegError, ValueError) as exc:
        raise EncodeError(f"this PyAV build has no usable {encoding.codec} encoder: {exc}") from exc
    assert isinstance(stream, av.audio.stream.AudioStream)
    if encoding.bit_rate:
        stream.bit_rate = encoding.bit_rate
    if encoding.options:
        stream.codec_context.options = dict(encoding.options)
    return stream


def _codec_context(encoding: Encoding, sample_rate: int, channels: int) -> Any:
    import av

    try:
        ctx = av.CodecContext.create(encoding.codec, "w")
    except (av.error.FFmpegError, ValueError) as exc:
        raise EncodeError(f"this PyAV build has no {encoding.codec} encoder: {exc}") from exc
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate = sample_rate
    ctx.layout = _layout(channels)
    formats = ctx.codec.audio_formats
    if formats:
        ctx.format = formats[0]
    if encoding.bit_rate:
        ctx.bit_rate = encoding.bit_rate
    if encoding.options:
        ctx.options = dict(encoding.options)
    try:
        ctx.open()
    except av.error.FFmpegError as exc:
        raise EncodeError(f"{encoding.codec} refused {sample_rate} Hz: {exc}") from exc
    return ctx


def _frames(blocks: Iterable[Samples], sample_rate: int, channels: int) -> Iterator[Any]:
    """PyAV frames of ``blocks``, time-stamped in samples: encoders and muxers take the
    stream's length (Ogg's last granule position, the encoder's end trimming) from these."""
    import av

    layout = _layout(channels)
    time_base = Fraction(1, sample_rate)
    pts = 0
    for block in blocks:
        samples = np.ascontiguousarray(block, dtype=np.int16).reshape(1, -1)
        if not samples.size:
            continue
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout=layout)
        frame.sample_rate = sample_rate
        frame.time_base = time_base
        frame.pts = pts
        pts += frame.samples
        yield frame


class _Sink:
    """Where a muxer writes. It has no ``seek``, so PyAV tells FFmpeg the output cannot seek
    and the muxer writes nothing it would come back to."""

    def __init__(self) -> None:
        self._data = bytearray()

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._data += view
        return len(view)

    def take(self) -> bytes:
        out = bytes(self._data)
        self._data.clear()
        return out


def _muxed_stream(
    blocks: Iterable[Samples],
    encoding: Encoding,
    sample_rate: int,
    channels: int,
    frames: int,
) -> Iterator[bytes]:
    import av

    sink = _Sink()
    container = av.open(sink, "w", format=encoding.container)
    try:
        stream = _add_stream(container, encoding, sample_rate, channels)
        container.start_encoding()  # opens the encoder now: see encode_stream
    except BaseException:
        container.close()
        raise
    return _relay_muxed(container, stream, sink, blocks, encoding, sample_rate, channels, frames)


def _relay_muxed(
    container: OutputContainer,
    stream: AudioStream,
    sink: _Sink,
    blocks: Iterable[Samples],
    encoding: Encoding,
    sample_rate: int,
    channels: int,
    frames: int,
) -> Iterator[bytes]:
    import av

    first = True
    try:
        for frame in _frames(blocks, sample_rate, channels):
            try:
                container.mux(stream.encode(frame))
            except av.error.FFmpegError as exc:
                raise EncodeError(f"{encoding.codec} could not encode the audio: {exc}") from exc
            if out := sink.take():
                if first and encoding.container == "flac":
                    out = flac_with_total_samples(out, frames)
                first = False
                yield out
        container.mux(stream.encode(None))
    finally:
        container.close()
    if out := sink.take():
        yield flac_with_total_samples(out, frames) if first else out


# -- FLAC ----------------------------------------------------------------------------------

#: Where STREAMINFO's 36-bit total-samples field lies in a FLAC stream: after "fLaC" (4) and
#: the metadata block header (4), 13.5 bytes into the block.
_FLAC_TOTAL_AT: Final = 8 + 13


def flac_with_total_samples(head: bytes, frames: int) -> bytes:
    """``head`` (the start of a FLAC stream) with STREAMINFO's total samples set to
    ``frames``, if it says 0 (unknown) there; otherwise unchanged."""
    if len(head) < _FLAC_TOTAL_AT + 5 or head[:4] != b"fLaC" or head[4] & 0x7F != 0:
        return head
    if not 0 < frames < 1 << 36:
        return head
    field = bytearray(head[_FLAC_TOTAL_AT : _FLAC_TOTAL_AT + 5])
    if field[0] & 0x0F or any(field[1:]):
        return head  # the encoder already knew
    field[0] |= (frames >> 32) & 0x0F
    field[1:] = (frames & 0xFFFFFFFF).to_bytes(4, "big")
    return head[:_FLAC_TOTAL_AT] + bytes(field) + head[_FLAC_TOTAL_AT + 5 :]


# -- MP3 -----------------------------------------------------------------------------------

#: LAME starts its output this many samples late (its MDCT look-ahead; lame_get_encoder_delay).
LAME_ENCODER_DELAY: Final = 576
#: And an MP3 decoder's synthesis filter bank another 528 + 1: together what a decoder that
#: reads the LAME tag skips at the start (FFmpeg's mp3dec and mpg123 alike).
MP3_DECODER_DELAY: Final = 528 + 1
_MP3_RATES: Final = (44100, 48000, 32000)
_MP3_KBPS: Final = {
    3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG-2 and 2.5
}
#: The Xing tag (120 bytes: "Info", flags, frames, bytes, 100-entry TOC, quality) and the
#: LAME extension after it (36 bytes), which together must fit in the tag's frame.
_XING_SIZE: Final = 120
_LAME_SIZE: Final = 36
#: The LAME tag's own CRC covers the tag frame's first 190 bytes (the CRC field as zero).
_LAME_CRC_SPAN: Final = 190
#: Decoders trust the delay and padding fields only from encoders they know; FFmpeg's muxer
#: writes "Lavf", which FFmpeg and mpg123 both accept.
_LAME_VERSION: Final = b"Lavf"


@dataclass(frozen=True, slots=True)
class Mp3Header:
    """What the 4-byte header of an MPEG audio layer III frame says."""

    version: int  # 3 MPEG-1, 2 MPEG-2, 0 MPEG-2.5
    bitrate_index: int
    sample_rate_index: int
    padding: bool
    mono: bool
    raw: int

    @classmethod
    def parse(cls, data: bytes) -> Mp3Header:
        if len(data) < 4:
            raise EncodeError("MP3 frame shorter than its header")
        (raw,) = struct.unpack(">I", data[:4])
        if raw >> 21 != 0x7FF or (raw >> 17) & 3 != 1 or (raw >> 19) & 3 == 1:
            raise EncodeError(f"not an MPEG layer III frame header: {data[:4].hex()}")
        return cls(
            version=(raw >> 19) & 3,
            bitrate_index=(raw >> 12) & 15,
            sample_rate_index=(raw >> 10) & 3,
            padding=bool((raw >> 9) & 1),
            mono=(raw >> 6) & 3 == 3,
            raw=raw,
        )

    @property
    def sample_rate(self) -> int:
        return _MP3_RATES[self.sample_rate_index] >> {3: 0, 2: 1, 0: 2}[self.version]

    @property
    def samples_per_frame(self) -> int:
        return 1152 if self.version == 3 else 576

    @property
    def side_info_size(self) -> int:
        if self.version == 3:
            return 17 if self.mono else 32
        return 9 if self.mono else 17

    def frame_size(self, bitrate_index: int | None = None, *, padding: bool = False) -> int:
        kbps = _MP3_KBPS[3 if self.version == 3 else 2][
            self.bitrate_index if bitrate_index is None else bitrate_index
        ]
        return self.samples_per_frame // 8 * kbps * 1000 // self.sample_rate + padding


def _crc16(data: bytes) -> int:
    """CRC-16 (polynomial 0x8005, reflected, initial 0): the LAME tag's."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def mp3_frame_count(frames: int, samples_per_frame: int) -> int:
    """Frames that hold ``frames`` samples behind the encoder's and the decoder's delay."""
    return math.ceil((frames + LAME_ENCODER_DELAY + MP3_DECODER_DELAY) / samples_per_frame)


def mp3_info_frame(first: Mp3Header, frames: int) -> tuple[bytes, int]:
    """The Xing/LAME "Info" frame that goes before the audio frames of a CBR stream of
    ``frames`` samples whose first frame is ``first``, and the number of audio frames it
    announces (the stream must hold exactly that many)."""
    spf = first.samples_per_frame
    count = mp3_frame_count(frames, spf)
    padding = count * spf - LAME_ENCODER_DELAY - frames
    offset = 4 + first.side_info_size
    need = offset + _XING_SIZE + _LAME_SIZE
    index = first.bitrate_index
    while first.frame_size(index) < need:  # a low bit rate at a high sample rate
        index += 1
    size = first.frame_size(index)
    # The tag frame: same version, rate and channel mode; no CRC, no padding slot, no
    # joint-stereo extension; a bit rate big enough for the tag.
    header = (first.raw & 0xFFFE0CC0) | 0x10000 | (index << 12)
    stream_bytes = size + round(count * spf / 8 * _kbps(first) * 1000 / first.sample_rate)
    tag = bytearray(size)
    struct.pack_into(">I", tag, 0, header)
    toc = bytes(min(255, i * 256 // 100) for i in range(100))
    struct.pack_into(">4sIII100sI", tag, offset, b"Info", 0x0F, count, stream_bytes, toc, 0)
    lame = offset + _XING_SIZE
    tag[lame : lame + len(_LAME_VERSION)] = _LAME_VERSION
    # version (9), revision, lowpass, peak (4), gains (2 + 2), flags, bit rate: zero here
    delays = (LAME_ENCODER_DELAY << 12) | padding
    tag[lame + 21 : lame + 24] = delays.to_bytes(3, "big")
    # misc, MP3 gain, preset: zero; music length; music CRC unknown while streaming: zero
    struct.pack_into(">I", tag, lame + 28, stream_bytes)
    crc = _crc16(bytes(tag[:_LAME_CRC_SPAN]))
    struct.pack_into(">H", tag, lame + 34, crc)
    return bytes(tag), count


def _kbps(header: Mp3Header) -> int:
    return _MP3_KBPS[3 if header.version == 3 else 2][header.bitrate_index]


def mp3_silent_frame(first: Mp3Header) -> bytes:
    """An audio frame that decodes to silence and borrows nothing from the bit reservoir:
    all side information zero."""
    header = (first.raw & 0xFFFFFDFF) | 0x10000
    return struct.pack(">I", header) + bytes(first.frame_size() - 4)


class _Mp3Stream:
    """libmp3lame's frames behind an Info frame that announces exactly how many follow.

    The count follows from the length: the first ``mp3_frame_count`` frames hold every input
    sample, so frames past it (LAME's flush can make one more) are dropped (layer III frames
    borrow bits only from frames before them), and should LAME make fewer, silent frames
    fill the count.
    """

    def __init__(self, encoding: Encoding, sample_rate: int, channels: int, frames: int) -> None:
        self._ctx = _codec_context(encoding, sample_rate, channels)
        self._encoding = encoding
        self._rate = sample_rate
        self._channels = channels
        self._frames = frames

    def run(self, blocks: Iterable[Samples]) -> Iterator[bytes]:
        import av

        first: Mp3Header | None = None
        left = 0
        pending: list[bytes] = []

        def emit(packets: Iterable[Any]) -> Iterator[bytes]:
            nonlocal first, left
            for packet in packets:
                data = bytes(packet)
                if first is None:
                    first = Mp3Header.parse(data)
                    if first.sample_rate != self._rate:
                        raise EncodeError(f"libmp3lame made {first.sample_rate} Hz frames")
                    tag, left = mp3_info_frame(first, self._frames)
                    yield tag
                if left > 0:
                    left -= 1
                    yield data

        for frame in _frames(blocks, self._rate, self._channels):
            try:
                packets = self._ctx.encode(frame)
            except av.error.FFmpegError as exc:
                raise EncodeError(f"libmp3lame could not encode the audio: {exc}") from exc
            pending.extend(emit(packets))
            if pending:
                yield b"".join(pending)
                pending.clear()
        pending.extend(emit(self._ctx.encode(None)))
        if first is not None:
            pending.extend(mp3_silent_frame(first) for _ in range(left))
        if pending:
            yield b"".join(pending)
