"""Recordings back to PCM, whatever their container: WAV, FLAC or Ogg Opus.

An archived recording (:mod:`callrec.engine.archive`) is FLAC or Opus; the player, the
downloads, the waveform and the CLI read it through here as they read a WAV: int16 blocks,
channels interleaved, at the recording's own rate and of exactly its length.

* WAV is read from its header (a file still being written announces what it held at its
  last header update).
* FLAC decodes sample for sample to what was encoded; STREAMINFO says its length.
* Opus always decodes at 48 kHz. The OpusHead names the rate it was encoded from and the last
  page's granule position, less the pre-skip, its exact length at 48 kHz, which is a whole
  number of samples at that rate (8 and 16 kHz divide 48 kHz): the decoded audio is
  resampled to it and cut (or padded) to exactly that many frames.

PyAV is imported when a compressed file is decoded (see :mod:`callrec.codecs.ffmpeg`).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from callrec.exceptions import CallrecError
from callrec.media.encode import Samples

#: Container names, as the archive policy and the catalogue name them.
WAV: Final = "wav"
FLAC_FORMAT: Final = "flac"
OPUS_FORMAT: Final = "opus"
#: File suffix of each container.
SUFFIXES: Final = {WAV: ".wav", FLAC_FORMAT: ".flac", OPUS_FORMAT: ".opus"}
#: What a browser is told each container is (Ogg Opus plays in every current browser).
MEDIA_TYPES: Final = {WAV: "audio/wav", FLAC_FORMAT: "audio/flac", OPUS_FORMAT: "audio/ogg"}
#: Opus decoders run at this rate whatever the input's.
OPUS_RATE: Final = 48000
#: Frames per block handed out: 8 s at 8 kHz.
BLOCK_FRAMES: Final = 64 * 1024
#: Bytes of a file's end read to find the last Ogg page (a page is at most 65,307 bytes).
_OGG_TAIL: Final = 65_536 + 27 + 255


class AudioFileError(CallrecError, ValueError):
    """Not a recording we can read: not WAV, FLAC or Ogg Opus, or damaged."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioLayout:
    """What a recording file holds, read from its headers alone."""

    #: ``wav``, ``flac`` or ``opus``.
    container: str
    #: Frames per second of the recording (Opus: the rate it was encoded from).
    sample_rate: int
    channels: int
    #: Sample frames at ``sample_rate``.
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.container]


def container_of(path: Path) -> str:
    """The container a recording's name says it is (``wav`` for anything unknown)."""
    suffix = Path(path).suffix.lower()
    for name, known in SUFFIXES.items():
        if suffix == known:
            return name
    return WAV


# -- WAV -----------------------------------------------------------------------------------


def wav_layout(path: Path) -> tuple[int, int, int, int]:
    """(sample rate, channels, offset of the audio, bytes of audio) of a 16-bit PCM WAV.

    A file still being written announces what it held at its last header update.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise AudioFileError(f"{path.name} is not a WAV file")
        rate = channels = bits = 0
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                raise AudioFileError(f"{path.name} has no data chunk")
            cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                fmt = fh.read(csize + (csize & 1))
                _tag, channels, rate, _rate_bytes, _align, bits = struct.unpack("<HHIIHH", fmt[:16])
            elif cid == b"data":
                if bits != 16 or not rate or not channels:
                    raise AudioFileError(f"{path.name} is not 16-bit PCM")
                offset = fh.tell()
                # Our writer keeps the header valid every sync interval; a header that says
                # nothing (0, or the streaming 0xFFFFFFFF) means "to the end of the file".
                unknown = csize in (0, 0xFFFFFFFF)
                length = size - offset if unknown else min(csize, size - offset)
                return rate, channels, offset, length - length % (2 * channels)
            else:
                fh.seek(csize + (csize & 1), os.SEEK_CUR)


def _wav_blocks(path: Path, offset: int, length: int, channels: int) -> Iterator[Samples]:
    with path.open("rb") as fh:
        fh.seek(offset)
        left = length
        while left > 0:
            data = fh.read(min(left, 2 * channels * BLOCK_FRAMES))
            data = data[: len(data) - len(data) % (2 * channels)]
            if not data:
                return
            left -= len(data)
            yield np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)


# -- FLAC and Opus headers -----------------------------------------------------------------


def _flac_layout(path: Path) -> AudioLayout:
    with path.open("rb") as fh:
        head = fh.read(8 + 34)
    if len(head) < 42 or head[:4] != b"fLaC" or head[4] & 0x7F != 0:
        raise AudioFileError(f"{path.name} is not a FLAC file")
    info = int.from_bytes(head[8 + 10 : 8 + 18], "big")
    rate = info >> 44
    channels = ((info >> 41) & 0x7) + 1
    frames = info & ((1 << 36) - 1)
    if not rate or not frames:
        raise AudioFileError(f"{path.name}: FLAC without a rate or a length")
    return AudioLayout(container=FLAC_FORMAT, sample_rate=rate, channels=channels, frames=frames)


def _opus_layout(path: Path) -> AudioLayout:
    size = path.stat().st_size
    with path.open("rb") as fh:
        first = fh.read(28 + 255 + 19)
        fh.seek(max(0, size - _OGG_TAIL))
        tail = fh.read()
    at = first.find(b"OpusHead")
    if first[:4] != b"OggS" or at < 0 or len(first) < at + 19:
        raise AudioFileError(f"{path.name} is not an Ogg Opus file")
    channels = first[at + 9]
    pre_skip, rate = struct.unpack("<HI", first[at + 10 : at + 16])
    last = tail.rfind(b"OggS")
    if last < 0 or len(tail) < last + 14:
        raise AudioFileError(f"{path.name}: no Ogg page at its end")
    (granule,) = struct.unpack("<q", tail[last + 6 : last + 14])
    samples = granule - pre_skip
    if rate <= 0 or OPUS_RATE % rate or samples <= 0:
        raise AudioFileError(f"{path.name}: Opus from {rate} Hz, {samples} samples")
    return AudioLayout(
        container=OPUS_FORMAT,
        sample_rate=rate,
        channels=channels,
        frames=samples * rate // OPUS_RATE,
    )


def layout(path: Path) -> AudioLayout:
    """What ``path`` holds, from its headers; :class:`AudioFileError` when unreadable."""
    path = Path(path)
    container = container_of(path)
    if container == FLAC_FORMAT:
        return _flac_layout(path)
    if container == OPUS_FORMAT:
        return _opus_layout(path)
    rate, channels, _offset, length = wav_layout(path)
    return AudioLayout(
        container=WAV, sample_rate=rate, channels=channels, frames=length // (2 * channels)
    )


# -- decoding ------------------------------------------------------------------------------


def pcm_blocks(path: Path) -> tuple[AudioLayout, Iterator[Samples]]:
    """The recording's layout and its audio: int16 blocks, channels interleaved, at its own
    rate, exactly ``layout.frames`` frames in all. The headers are read now (an unreadable
    file raises :class:`AudioFileError` here); the audio as the blocks are asked for."""
    path = Path(path)
    found = layout(path)
    if found.container == WAV:
        _rate, channels, offset, length = wav_layout(path)
        return found, _wav_blocks(path, offset, length, channels)
    return found, _exact(_decoded(path, found), found)


def _decoded(path: Path, found: AudioLayout) -> Iterator[Samples]:
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise AudioFileError(f"cannot open {path.name}: {exc}") from exc
    layout_name = "mono" if found.channels == 1 else "stereo"
    with container:
        stream = container.streams.audio[0]
        # FLAC comes out at its own rate (as s16: lossless); Opus at 48 kHz, brought back.
        resampler = av.AudioResampler(format="s16", layout=layout_name, rate=found.sample_rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield _interleaved(out)
            for out in resampler.resample(None):
                yield _interleaved(out)
        except av.error.FFmpegError as exc:
            raise AudioFileError(f"cannot decode {path.name}: {exc}") from exc


def _interleaved(frame: Any) -> Samples:
    # Packed s16: one plane, channels already interleaved.
    array: Samples = frame.to_ndarray().reshape(-1).astype(np.int16, copy=False)
    return array


def _exact(blocks: Iterator[Samples], found: AudioLayout) -> Iterator[Samples]:
    """``blocks`` cut, or padded with silence, to exactly ``found.frames`` frames: a
    resampler's last few samples are its filter's, not the recording's."""
    left = found.frames * found.channels
    for block in blocks:
        if left <= 0:
            continue  # drain the decoder, keep nothing more
        piece = block[:left]
        left -= len(piece)
        if len(piece):
            yield piece
    if left > 0:
        yield np.zeros(left, dtype=np.int16)


def read_all(path: Path) -> tuple[AudioLayout, np.ndarray[Any, np.dtype[np.int16]]]:
    """The whole recording as one (frames, channels) array; for checks and tests."""
    found, blocks = pcm_blocks(path)
    parts = list(blocks)
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
    return found, flat.reshape(-1, found.channels)
