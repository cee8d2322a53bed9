"""Audio out of the web server: file slices, on-demand transcoding, ZIP streams, waveform peaks.

Nothing here holds a whole recording in memory. File slices, transcoded audio and ZIP
archives are synchronous generators, which the ASGI layer iterates on worker threads so that
a long encode never holds up the event loop; a client that goes away stops the generator.
Transcoding is PyAV's (:mod:`callrec.media.encode`): no FFmpeg program is needed. A recording
the archive policy made FLAC or Opus (:mod:`callrec.engine.archive`) is read through
:mod:`callrec.media.decode`: its WAV is made on the fly, of the exact length.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from callrec.media.decode import WAV, AudioFileError, container_of, pcm_blocks, wav_layout
from callrec.media.encode import FLAC, MP3, OPUS_DOWNLOAD, EncodeError, Encoding, encode_stream
from callrec.media.wav import WavHeader
from callrec.spreadsheet import SafeDictWriter

logger = logging.getLogger(__name__)

CHUNK: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class AudioFormat:
    name: str
    extension: str
    media_type: str
    #: How it is encoded; None for the original file.
    encoding: Encoding | None


#: What a recording can be downloaded as. The WAV is the file itself; the others are made
#: on demand. Opus and MP3 bit rates suit narrow- and wide-band speech.
FORMATS: Final[dict[str, AudioFormat]] = {
    "wav": AudioFormat("wav", "wav", "audio/wav", None),
    "flac": AudioFormat("flac", "flac", "audio/flac", FLAC),
    "opus": AudioFormat("opus", "opus", "audio/ogg", OPUS_DOWNLOAD),
    "mp3": AudioFormat("mp3", "mp3", "audio/mpeg", MP3),
}


class TranscodeError(Exception):
    """This server's PyAV lacks the format's encoder."""


# -- file slices ---------------------------------------------------------------------------


def file_slice(path: Path, start: int, length: int) -> Iterator[bytes]:
    """``length`` bytes of ``path`` from ``start``, in chunks (fewer if the file shrank)."""
    with path.open("rb") as fh:
        fh.seek(start)
        left = length
        while left > 0:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


# -- transcoding ---------------------------------------------------------------------------


def transcode(path: Path, fmt: AudioFormat) -> Iterator[bytes]:
    """The recording in ``fmt``, encoded in-process by PyAV as it is read, piece by piece.

    Blocking: call it, and iterate what it returns, on a worker thread. The recording's
    layout is read and the encoder opened here, so an unreadable file raises
    :class:`WavLayoutError` and a missing encoder :class:`TranscodeError` before any byte is
    sent. The length goes into the headers a player reads first (FLAC's total samples, MP3's
    Info frame). The recording may be WAV, FLAC or Opus (an archived one).
    """
    assert fmt.encoding is not None
    found, blocks = pcm_blocks(path)
    try:
        pieces = encode_stream(
            blocks,
            encoding=fmt.encoding,
            sample_rate=found.sample_rate,
            channels=found.channels,
            frames=found.frames,
        )
        first = next(pieces, b"")
    except EncodeError as exc:
        raise TranscodeError(str(exc)) from exc
    return _relay(first, pieces, path)


def as_wav(path: Path) -> tuple[int, Iterator[bytes]]:
    """An archived (FLAC or Opus) recording as a WAV, decoded as it is sent: its size (the
    header's, known from the archive's exact length) and its bytes. Blocking, as
    :func:`transcode`; an unreadable file raises :class:`WavLayoutError` here."""
    found, blocks = pcm_blocks(path)
    try:
        header = WavHeader(
            sample_rate=found.sample_rate,
            channels=found.channels,
            data_size=found.frames * found.channels * 2,
        )
    except ValueError as exc:
        raise WavLayoutError(f"{path.name}: {exc}") from exc
    head = header.serialize()
    return len(head) + header.data_size, _wav_pieces(head, blocks, path)


def _wav_pieces(head: bytes, blocks: Iterator[np.ndarray[Any, Any]], path: Path) -> Iterator[bytes]:
    yield head
    try:
        for block in blocks:
            yield block.astype("<i2", copy=False).tobytes()
    except AudioFileError as exc:  # too late for an error status: the client gets a short file
        logger.error("decoding %s failed: %s", path, exc)


def _relay(first: bytes, pieces: Iterator[bytes], path: Path) -> Iterator[bytes]:
    yield first
    try:
        yield from pieces
    except (
        EncodeError,
        AudioFileError,
    ) as exc:  # too late for an error status: the client gets a short file
        logger.error("encoding %s failed: %s", path, exc)


# -- ZIP -----------------------------------------------------------------------------------


class _Pipe(io.RawIOBase):
    """An unseekable file that keeps what is written until it is taken. ``zipfile`` writes
    to it as to a socket: local headers, data, data descriptors, then the directory."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._buffer += view
        self._position += len(view)
        return len(view)

    def tell(self) -> int:
        return self._position

    def pending(self) -> int:
        return len(self._buffer)

    def take(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out


@dataclass(frozen=True, slots=True)
class ZipMember:
    path: Path
    arcname: str
    modified: datetime
    #: Reads the member from elsewhere than ``path`` (the object store): its size and bytes.
    source: Callable[[], tuple[int, Iterator[bytes]]] | None = None


def zip_stream(
    members: Iterable[ZipMember], *, index_rows: list[dict[str, Any]] | None = None
) -> Iterator[bytes]:
    """A ZIP of ``members``, stored (WAV does not deflate), produced as it is read.

    The archive never exists as a whole: at most about one chunk is held. Members whose file
    is gone are skipped and listed in ``MISSING.txt``; ``index_rows`` become ``index.csv``.
    Zip64 is used where a member or the archive needs it.
    """
    pipe = _Pipe()
    missing: list[str] = []
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for member in members:
            try:
                size, chunks = _open_member(member)
            except Exception as exc:  # a file gone, a store that fails: listed, not fatal
                logger.warning("ZIP member %s left out: %s", member.arcname, exc)
                missing.append(member.arcname)
                continue
            info = zipfile.ZipInfo(member.arcname, date_time=_zip_time(member.modified))
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = size
            info.external_attr = 0o644 << 16
            with archive.open(info, "w", force_zip64=size > 0x7FFFFFFF) as dest:
                for chunk in chunks:
                    dest.write(chunk)
                    if pipe.pending() >= CHUNK:
                        yield pipe.take()
            yield pipe.take()
        if index_rows:
            text = io.StringIO()
            writer = SafeDictWriter(text, list(index_rows[0]))
            writer.writeheader()
            writer.writerows(index_rows)
            archive.writestr("index.csv", text.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
        if missing:
            archive.writestr("MISSING.txt", "\n".join(missing) + "\n")
    yield pipe.take()


def _open_member(member: ZipMember) -> tuple[int, Iterator[bytes]]:
    if member.source is not None:
        return member.source()
    fh = member.path.open("rb")
    return os.fstat(fh.fileno()).st_size, _file_chunks(fh)


def _file_chunks(fh: io.BufferedReader) -> Iterator[bytes]:
    with fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def _zip_time(moment: datetime) -> tuple[int, int, int, int, int, int]:
    local = moment.astimezone()
    year = min(max(local.year, 1980), 2107)
    return (year, local.month, local.day, local.hour, local.minute, local.second)


# -- waveform peaks ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Peaks:
    sample_rate: int
    duration: float
    #: (min, max) per bucket, in -1.0 .. 1.0.
    buckets: list[tuple[float, float]]


#: Not a recording we can read (a WAV, FLAC or Ogg Opus file): answered 422.
WavLayoutError = AudioFileError


def compute_peaks(path: Path, buckets: int) -> Peaks:
    """Min and max of the mix in ``buckets`` equal slices of the recording."""
    if container_of(path) != WAV:
        return _decoded_peaks(path, buckets)
    rate, channels, offset, length = wav_layout(path)
    frames = length // (2 * channels)
    if frames == 0:
        return Peaks(rate, 0.0, [])
    samples = np.memmap(path, dtype="<i2", mode="r", offset=offset, shape=(frames * channels,))
    mono = samples.reshape(frames, channels).mean(axis=1) if channels > 1 else samples
    count = min(buckets, frames)
    edges = np.linspace(0, frames, count + 1).astype(np.int64)
    lows = np.minimum.reduceat(mono, edges[:-1]) / 32768.0
    highs = np.maximum.reduceat(mono, edges[:-1]) / 32768.0
    pairs = [(round(float(a), 4), round(float(b), 4)) for a, b in zip(lows, highs, strict=True)]
    del samples
    return Peaks(rate, frames / rate, pairs)


def _decoded_peaks(path: Path, buckets: int) -> Peaks:
    """:func:`compute_peaks` of an archived recording, decoded block by block: the same
    buckets as of its WAV (from FLAC the very same figures)."""
    found, blocks = pcm_blocks(path)
    frames, channels = found.frames, found.channels
    if frames == 0:
        return Peaks(found.sample_rate, 0.0, [])
    count = min(buckets, frames)
    edges = np.linspace(0, frames, count + 1).astype(np.int64)
    lows = np.full(count, np.inf)
    highs = np.full(count, -np.inf)
    position = 0
    for block in blocks:
        pcm = block.reshape(-1, channels)
        mono = pcm.mean(axis=1) if channels > 1 else pcm[:, 0]
        if not len(mono):
            continue
        end = position + len(mono)
        # The buckets this block touches, and where each starts inside it.
        first = int(np.searchsorted(edges, position, side="right")) - 1
        last = min(int(np.searchsorted(edges, end - 1, side="right")) - 1, count - 1)
        starts = np.maximum(edges[first : last + 1], position) - position
        touched = slice(first, last + 1)
        lows[touched] = np.minimum(lows[touched], np.minimum.reduceat(mono, starts))
        highs[touched] = np.maximum(highs[touched], np.maximum.reduceat(mono, starts))
        position = end
    pairs = [
        (round(float(a) / 32768.0, 4), round(float(b) / 32768.0, 4))
        for a, b in zip(lows, highs, strict=True)
    ]
    return Peaks(found.sample_rate, frames / found.sample_rate, pairs)


class PeaksCache:
    """Peaks by (file, size, mtime, buckets), for the few recordings being looked at."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._items: OrderedDict[tuple[Any, ...], Peaks] = OrderedDict()

    def get(self, path: Path, buckets: int) -> Peaks:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns, buckets)
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
            return found
        peaks = compute_peaks(path, buckets)
        self._items[key] = peaks
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return peaks
