"""Audio out of the web server: file slices, on-demand transcoding, ZIP streams, waveform peaks.

Nothing here holds a whole recording in memory. File slices and ZIP archives are synchronous
generators (the ASGI layer iterates them on worker threads); transcoding is an FFmpeg child
process whose output is relayed as it comes and which is killed when the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import shutil
import struct
import zipfile
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from callrec.spreadsheet import SafeDictWriter

logger = logging.getLogger(__name__)

CHUNK: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class AudioFormat:
    name: str
    extension: str
    media_type: str
    #: FFmpeg output options; None for the original file.
    ffmpeg_args: tuple[str, ...] | None


#: What a recording can be downloaded as. The WAV is the file itself; the others are made
#: on demand. Opus and MP3 bit rates suit narrow- and wide-band speech.
FORMATS: Final[dict[str, AudioFormat]] = {
    "wav": AudioFormat("wav", "wav", "audio/wav", None),
    "flac": AudioFormat("flac", "flac", "audio/flac", ("-c:a", "flac", "-f", "flac")),
    "opus": AudioFormat(
        "opus",
        "opus",
        "audio/ogg",
        ("-c:a", "libopus", "-b:a", "24k", "-application", "voip", "-f", "ogg"),
    ),
    "mp3": AudioFormat(
        "mp3", "mp3", "audio/mpeg", ("-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3")
    ),
}


class TranscodeError(Exception):
    """FFmpeg is missing or could not convert the file."""


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


async def transcode(
    path: Path, fmt: AudioFormat, *, frames: int | None = None
) -> AsyncIterator[bytes]:
    """The recording converted by FFmpeg, relayed chunk by chunk as FFmpeg writes it.

    The first chunk is produced before this returns an iterator, so a file FFmpeg cannot
    read raises :class:`TranscodeError` while the caller can still answer with an error.
    ``frames``, when known, goes into a FLAC header that FFmpeg, writing to a pipe, cannot
    go back to complete (players then know the duration).
    """
    assert fmt.ffmpeg_args is not None
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise TranscodeError("FFmpeg is not installed on the server")
    proc = await asyncio.create_subprocess_exec(
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-i",
        str(path),
        "-map_metadata",
        "-1",
        *fmt.ffmpeg_args,
        "pipe:1",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    errors = asyncio.ensure_future(proc.stderr.read(16 * 1024))
    try:
        first = await proc.stdout.read(CHUNK)
    except BaseException:
        await _reap(proc, errors)
        raise
    if not first:
        code = await proc.wait()
        message = (await errors).decode(errors="replace").strip()
        raise TranscodeError(f"FFmpeg could not convert {path.name} ({code}): {message}")
    if fmt.name == "flac" and frames is not None:
        first = flac_with_total_samples(first, frames)
    return _relay(proc, first, errors, path)


#: Where STREAMINFO's 36-bit total-samples field lies in a FLAC stream: after "fLaC" (4) and
#: the metadata block header (4), 13.5 bytes into the block.
_FLAC_TOTAL_AT = 8 + 13


def flac_with_total_samples(head: bytes, frames: int) -> bytes:
    """``head`` (the start of a FLAC stream) with STREAMINFO's total samples set to
    ``frames``, if it says 0 (unknown) there; otherwise unchanged."""
    if len(head) < _FLAC_TOTAL_AT + 5 or head[:4] != b"fLaC" or head[4] & 0x7F != 0:
        return head
    if not 0 < frames < 1 << 36:
        return head
    field = bytearray(head[_FLAC_TOTAL_AT : _FLAC_TOTAL_AT + 5])
    if field[0] & 0x0F or any(field[1:]):
        return head  # FFmpeg already knew
    field[0] |= (frames >> 32) & 0x0F
    field[1:] = (frames & 0xFFFFFFFF).to_bytes(4, "big")
    return head[:_FLAC_TOTAL_AT] + bytes(field) + head[_FLAC_TOTAL_AT + 5 :]


async def _relay(
    proc: asyncio.subprocess.Process, first: bytes, errors: asyncio.Future[bytes], path: Path
) -> AsyncIterator[bytes]:
    assert proc.stdout is not None
    try:
        yield first
        while chunk := await proc.stdout.read(CHUNK):
            yield chunk
        code = await proc.wait()
        if code:
            message = (await errors).decode(errors="replace").strip()
            logger.error("FFmpeg failed on %s (%d): %s", path, code, message)
    finally:
        await _reap(proc, errors)


async def _reap(proc: asyncio.subprocess.Process, errors: asyncio.Future[bytes]) -> None:
    """Kill FFmpeg if it still runs (client gone) and collect it."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(Exception):
        await proc.wait()
    errors.cancel()
    with contextlib.suppress(BaseException):
        await errors


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
                fh = member.path.open("rb")
            except OSError:
                missing.append(member.arcname)
                continue
            with fh:
                size = os.fstat(fh.fileno()).st_size
                info = zipfile.ZipInfo(member.arcname, date_time=_zip_time(member.modified))
                info.compress_type = zipfile.ZIP_STORED
                info.file_size = size
                info.external_attr = 0o644 << 16
                with archive.open(info, "w", force_zip64=size > 0x7FFFFFFF) as dest:
                    while chunk := fh.read(CHUNK):
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


class WavLayoutError(ValueError):
    """Not a 16-bit PCM WAV file we can read."""


def wav_layout(path: Path) -> tuple[int, int, int, int]:
    """(sample rate, channels, offset of the audio, bytes of audio) of a 16-bit PCM WAV.

    A file still being written announces what it held at its last header update.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise WavLayoutError(f"{path.name} is not a WAV file")
        rate = channels = bits = 0
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                raise WavLayoutError(f"{path.name} has no data chunk")
            cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                fmt = fh.read(csize + (csize & 1))
                _tag, channels, rate, _rate_bytes, _align, bits = struct.unpack("<HHIIHH", fmt[:16])
            elif cid == b"data":
                if bits != 16 or not rate or not channels:
                    raise WavLayoutError(f"{path.name} is not 16-bit PCM")
                offset = fh.tell()
                # Our writer keeps the header valid every sync interval; a header that says
                # nothing (0, or the streaming 0xFFFFFFFF) means "to the end of the file".
                unknown = csize in (0, 0xFFFFFFFF)
                length = size - offset if unknown else min(csize, size - offset)
                return rate, channels, offset, length - length % (2 * channels)
            else:
                fh.seek(csize + (csize & 1), os.SEEK_CUR)


def compute_peaks(path: Path, buckets: int) -> Peaks:
    """Min and max of the mix in ``buckets`` equal slices of the recording."""
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
