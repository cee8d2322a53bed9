"""Crash-safe progressive WAV files: 16-bit PCM, mono or stereo.

A recording is a canonical 44-byte RIFF/WAVE header followed by the samples. The header goes to
disk first, with sizes for no data, so the file is a valid (empty) WAV from its first moment.
:meth:`WavWriter.write` only appends to memory; :meth:`WavWriter.flush`, called every
``sync_interval``, appends the buffer to the file and then rewrites the header sizes. After a
``kill -9`` the file is therefore a valid WAV holding every frame up to the last flush.

Data is written before the header grows, so the header never announces bytes the file does not
hold. A crash between the two leaves a valid file with some unannounced audio at its end (or, if
a write was cut short, part of a frame); :func:`repair_wav` brings that audio back and drops the
partial frame.

A process crash loses nothing that was flushed: the page cache outlives the process. A power
cut loses what is still only in the page cache: :meth:`WavWriter.sync` (``fdatasync``) puts a
flushed file on the disk, and the recording engine makes every file durable after each
interval's flushes (:mod:`callrec.engine.durability`); :meth:`WavWriter.close` and
:func:`repair_wav` ``fsync``. On the disk the header may be older or newer than the data after
a power cut (the kernel writes pages back in any order between two syncs): the file is valid or
:func:`repair_wav` makes it so.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from callrec import filemodes
from callrec.exceptions import CallrecError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

HEADER_SIZE = 44
SAMPLE_WIDTH = 2  # bytes per sample: 16-bit PCM only
WAVE_FORMAT_PCM = 1
CHANNELS = (1, 2)

# RIFF size field (offset 4) counts everything after itself: the 36 header bytes that follow it,
# then the data. It is 32-bit, which caps the data at just under 4 GiB.
_RIFF_OVERHEAD = HEADER_SIZE - 8
_MAX_RIFF_SIZE = 0xFFFFFFFF
_FMT_CHUNK_SIZE = 16
_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
# The format fields end here; a file at least this long names its own rate and channels.
_FMT_END = 36
# Byte ranges of the header that are the same in every file we write (magic, chunk ids, fmt
# size, PCM tag, bits per sample); used to recognise a header that was cut short.
_CONSTANT_RANGES = ((0, 4), (8, 22), (34, 40))
_HASH_CHUNK = 1 << 20
_O_BINARY: int = getattr(os, "O_BINARY", 0)
# fdatasync skips the metadata a read does not need (times); where it is missing, fsync.
_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


class WavError(CallrecError):
    """A file that is not a WAV we wrote, or a WAV operation we refuse."""


class WavRepairError(WavError):
    """:func:`repair_wav` was given a file it cannot turn back into a valid WAV."""


class WavTooLargeError(WavError):
    """More audio than one RIFF file can hold (its sizes are 32-bit)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WavInfo:
    """What a finished (closed or repaired) recording file holds."""

    path: Path
    #: Frames per second.
    sample_rate: int
    #: 1 (mono) or 2 (stereo: left, right interleaved).
    channels: int
    #: Sample frames in the file (one sample per channel each).
    frames: int
    #: Seconds of audio: ``frames / sample_rate``.
    duration: float
    #: Size of the file: header plus data.
    size_bytes: int
    #: Hex SHA-256 of the whole file, header included.
    sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WavHeader:
    """The canonical 44-byte header: RIFF, a 16-byte ``fmt `` chunk, then ``data``."""

    sample_rate: int
    channels: int
    #: Bytes of sample data following the header; a whole number of frames.
    data_size: int = 0

    def __post_init__(self) -> None:
        if self.channels not in CHANNELS:
            raise ValueError(f"channels must be 1 or 2, not {self.channels}")
        if not 0 < self.sample_rate * self.channels * SAMPLE_WIDTH <= 0xFFFFFFFF:
            raise ValueError(f"sample rate {self.sample_rate} out of range")
        if not 0 <= self.data_size <= max_data_size(self.channels):
            raise ValueError(f"data size {self.data_size} out of range")
        if self.data_size % self.block_align:
            raise ValueError(f"data size {self.data_size} is not a whole number of frames")

    @property
    def block_align(self) -> int:
        """Bytes per frame."""
        return self.channels * SAMPLE_WIDTH

    @property
    def byte_rate(self) -> int:
        return self.sample_rate * self.block_align

    @property
    def frames(self) -> int:
        return self.data_size // self.block_align

    @classmethod
    def parse(cls, data: bytes) -> WavHeader:
        """Parse a header we wrote; the two sizes must agree with each other."""
        channels, sample_rate, riff_size, data_size = _parse_format(data)
        if riff_size != _RIFF_OVERHEAD + data_size:
            raise WavError(f"WAV RIFF size {riff_size} does not match its data size {data_size}")
        if data_size % (channels * SAMPLE_WIDTH):
            raise WavError(f"WAV data size {data_size} is not a whole number of frames")
        return cls(sample_rate=sample_rate, channels=channels, data_size=data_size)

    def serialize(self) -> bytes:
        return _HEADER.pack(
            b"RIFF",
            _RIFF_OVERHEAD + self.data_size,
            b"WAVE",
            b"fmt ",
            _FMT_CHUNK_SIZE,
            WAVE_FORMAT_PCM,
            self.channels,
            self.sample_rate,
            self.byte_rate,
            self.block_align,
            SAMPLE_WIDTH * 8,
            b"data",
            self.data_size,
        )


def max_data_size(channels: int) -> int:
    """Most data bytes one file can hold: the 32-bit RIFF size, rounded down to whole frames."""
    block_align = channels * SAMPLE_WIDTH
    limit = _MAX_RIFF_SIZE - _RIFF_OVERHEAD
    return limit - limit % block_align


def _parse_format(data: bytes) -> tuple[int, int, int, int]:
    """Check a header is one we write; return (channels, sample_rate, riff_size, data_size).

    The sizes are returned unchecked: :func:`repair_wav` recomputes them from the file.
    """
    if len(data) < HEADER_SIZE:
        raise WavError(f"WAV header is truncated: {len(data)} of {HEADER_SIZE} bytes")
    (
        riff,
        riff_size,
        wave,
        fmt_id,
        fmt_size,
        tag,
        channels,
        sample_rate,
        byte_rate,
        block_align,
        bits,
        data_id,
        data_size,
    ) = _HEADER.unpack_from(data)
    if riff != b"RIFF" or wave != b"WAVE":
        raise WavError("not a RIFF/WAVE file")
    if fmt_id != b"fmt " or fmt_size != _FMT_CHUNK_SIZE:
        raise WavError("WAV does not start with a 16-byte 'fmt ' chunk")
    if tag != WAVE_FORMAT_PCM:
        raise WavError(f"WAV format tag {tag} is not PCM ({WAVE_FORMAT_PCM})")
    if bits != SAMPLE_WIDTH * 8:
        raise WavError(f"WAV has {bits} bits per sample, not {SAMPLE_WIDTH * 8}")
    if channels not in CHANNELS:
        raise WavError(f"WAV has {channels} channels, not 1 or 2")
    if sample_rate == 0:
        raise WavError("WAV sample rate is 0")
    if block_align != channels * SAMPLE_WIDTH or byte_rate != sample_rate * block_align:
        raise WavError("WAV block align or byte rate does not match its format")
    if data_id != b"data":
        raise WavError("WAV has no 'data' chunk right after 'fmt '")
    return channels, sample_rate, riff_size, data_size


def read_format(data: bytes) -> tuple[int, int]:
    """The sample rate and channels a header we write names, whatever its sizes say: a file
    being written may be read between its data and its header's update."""
    channels, sample_rate, _, _ = _parse_format(data)
    return sample_rate, channels


def _info(path: Path, header: WavHeader, sha256: str) -> WavInfo:
    return WavInfo(
        path=path,
        sample_rate=header.sample_rate,
        channels=header.channels,
        frames=header.frames,
        duration=header.frames / header.sample_rate,
        size_bytes=HEADER_SIZE + header.data_size,
        sha256=sha256,
    )


def _lock_file(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def being_written(path: Path) -> bool:
    """True while a :class:`WavWriter` of a live process (this one or another) holds
    ``path`` open; False for a file nobody writes, or none at all."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | _O_BINARY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the shared lock just taken
    return False


class WavWriter:
    """Write one recording progressively; see the module docstring for the crash guarantees.

    :meth:`write` may be called from one thread (the event loop) while :meth:`flush` runs in
    another (an executor): the buffer is swapped under a short lock and disk I/O happens
    outside it. Used as a context manager, the writer is closed on success and aborted on error.
    """

    def __init__(self, path: Path, *, sample_rate: int, channels: int = 1) -> None:
        self._header = WavHeader(sample_rate=sample_rate, channels=channels)
        self._path = Path(path)
        self._max_data = max_data_size(channels)
        filemodes.make_dirs(self._path.parent)
        # O_EXCL: never clobber a recording, even if two sessions compute the same name.
        self._fd = filemodes.create(self._path, os.O_RDWR | _O_BINARY)
        try:
            # Held until the file is closed, or the process dies: recovery after a crash
            # leaves alone the files another live process is still writing.
            _lock_file(self._fd)
            _write_all(self._fd, self._header.serialize())
        except BaseException:
            os.close(self._fd)
            self._path.unlink(missing_ok=True)
            raise
        self._lock = threading.Lock()  # guards _buffer, _accepted, _accepting
        self._io_lock = threading.Lock()  # serialises flush, close and abort
        self._buffer = bytearray()
        self._accepting = True
        self._accepted = 0  # data bytes handed to write()
        self._written = 0  # data bytes written to the file
        self._announced = 0  # data bytes the header on disk announces
        self._info: WavInfo | None = None

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def sample_rate(self) -> int:
        return self._header.sample_rate

    @property
    def channels(self) -> int:
        return self._header.channels

    @property
    def frames_written(self) -> int:
        """Frames accepted by :meth:`write`: those on disk plus those buffered."""
        return self._accepted // self._header.block_align

    @property
    def duration(self) -> float:
        return self.frames_written / self._header.sample_rate

    @property
    def bytes_buffered(self) -> int:
        """Data bytes accepted but not yet written to the file."""
        return self._accepted - self._written

    @property
    def room(self) -> int:
        """Data bytes :meth:`write` still accepts before the file is at its largest."""
        return self._max_data - self._accepted

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def write(self, pcm: bytes | bytearray | memoryview) -> None:
        """Buffer whole frames of interleaved little-endian int16 samples. No system call."""
        data = memoryview(pcm).cast("B")
        if len(data) % self._header.block_align:
            raise ValueError(
                f"{len(data)} bytes of PCM is not a whole number of "
                f"{self._header.block_align}-byte frames"
            )
        with self._lock:
            if not self._accepting:
                raise ValueError("write to a closed WavWriter")
            if self._accepted + len(data) > self._max_data:
                raise WavTooLargeError(
                    f"{self._path}: a WAV file holds at most {self._max_data} bytes of audio"
                )
            self._buffer += data
            self._accepted += len(data)

    def flush(self) -> None:
        """Append the buffer to the file, then make the header announce exactly what is there.

        An ``OSError`` (``ENOSPC`` ...) propagates; what was not written stays buffered, in
        order, and the header still describes the file, so a later flush can complete it.
        """
        with self._io_lock:
            if self._fd < 0:
                raise ValueError("flush of a closed WavWriter")
            self._flush_locked()

    def sync(self) -> None:
        """``fdatasync`` the file: what :meth:`flush` wrote, header included, is on the disk.

        Does nothing once the writer is closed (close fsyncs) or aborted. Serialised with
        flush and close, so the descriptor cannot be closed (and reused) meanwhile. An
        ``OSError`` propagates; the writer stays usable.
        """
        with self._io_lock:
            if self._fd >= 0:
                _fdatasync(self._fd)

    def close(self) -> WavInfo:
        """Flush, fsync and close; return what the file holds. Closing twice returns the same.

        If the final flush or fsync fails, the writer is aborted before the error propagates.
        """
        with self._io_lock:
            if self._info is not None:
                return self._info
            if self._fd < 0:
                raise ValueError("close of an aborted WavWriter")
            with self._lock:
                self._accepting = False
            try:
                self._flush_locked()
                os.fsync(self._fd)
                sha256 = _sha256_fd(self._fd)
            except BaseException:
                self._abort_locked()
                raise
            os.close(self._fd)
            self._fd = -1
            fsync_dir(self._path.parent)
            header = WavHeader(
                sample_rate=self.sample_rate, channels=self.channels, data_size=self._written
            )
            self._info = _info(self._path, header, sha256)
            return self._info

    def abort(self) -> None:
        """Close without flushing or fsync: the file keeps what the last flush put there.

        Buffered audio is dropped (and no longer counted by :attr:`frames_written`). Aborting a
        closed or aborted writer does nothing.
        """
        with self._io_lock:
            self._abort_locked()

    def _abort_locked(self) -> None:
        with self._lock:
            self._accepting = False
            self._accepted -= len(self._buffer)
            self._buffer = bytearray()
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def _flush_locked(self) -> None:
        with self._lock:
            chunk, self._buffer = self._buffer, bytearray()
        view = memoryview(chunk)
        try:
            while view:
                count = os.write(self._fd, view)
                self._written += count
                view = view[count:]
        except OSError:
            # Keep what did not reach the disk, in order, for the next flush.
            with self._lock:
                self._buffer[0:0] = view
            raise
        if self._announced != self._written:
            header = WavHeader(
                sample_rate=self.sample_rate, channels=self.channels, data_size=self._written
            )
            # One pwrite of the whole header: both sizes change together, and the other
            # fields are rewritten with the values they already have.
            _pwrite_all(self._fd, header.serialize(), 0)
            self._announced = self._written


def repair_wav(path: Path, *, sample_rate: int = 8000, channels: int = 1) -> WavInfo:
    """Make a recording left by a crash valid again, in place, and fsync it.

    The data is everything after the header, cut down to whole frames (the file is truncated
    to match); both header sizes are rewritten. A file too short to hold a header (a crash
    right after it was created) gets an empty header: its own format if the file is long
    enough to say, else ``sample_rate`` and ``channels``. Repairing a valid file changes nothing.
    Raises :class:`WavRepairError` for anything that is not a WAV as :class:`WavWriter` writes.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDWR | _O_BINARY)
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, HEADER_SIZE, 0)
        if len(head) < HEADER_SIZE:
            fallback = WavHeader(sample_rate=sample_rate, channels=channels).serialize()
            for start, end in _CONSTANT_RANGES:
                if head[start:end] != fallback[start:end][: len(head[start:end])]:
                    raise WavRepairError(f"{path}: {size}-byte file is not the start of a WAV")
            keep = len(head) if len(head) >= _FMT_END else 0
            head = head[:keep] + fallback[keep:]
        try:
            file_channels, file_rate, _, _ = _parse_format(head)
        except WavError as exc:
            raise WavRepairError(f"{path}: cannot repair: {exc}") from exc
        block_align = file_channels * SAMPLE_WIDTH
        data_size = max(size - HEADER_SIZE, 0)
        data_size -= data_size % block_align
        if data_size > max_data_size(file_channels):
            raise WavRepairError(f"{path}: cannot repair: more audio than a WAV file can hold")
        header = WavHeader(sample_rate=file_rate, channels=file_channels, data_size=data_size)
        if size != HEADER_SIZE + data_size:
            os.ftruncate(fd, HEADER_SIZE + data_size)
        new_head = header.serialize()
        if new_head != os.pread(fd, HEADER_SIZE, 0):
            _pwrite_all(fd, new_head, 0)
        os.fsync(fd)
        sha256 = _sha256_fd(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)
    return _info(path, header, sha256)


def read_wav_info(path: Path) -> WavInfo:
    """Describe a WAV file we wrote; raise :class:`WavError` if its header does not match it.

    A file whose header announces less (or more) data than it holds needs :func:`repair_wav`.
    """
    path = Path(path)
    with path.open("rb") as file:
        try:
            header = WavHeader.parse(file.read(HEADER_SIZE))
        except WavError as exc:
            raise WavError(f"{path}: {exc}") from exc
        held = os.fstat(file.fileno()).st_size - HEADER_SIZE
        if held != header.data_size:
            raise WavError(
                f"{path}: header announces {header.data_size} data bytes but the file holds "
                f"{held}; repair_wav fixes this"
            )
        file.seek(0)
        sha256 = hashlib.file_digest(file, "sha256").hexdigest()
    return _info(path, header, sha256)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    with Path(path).open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _sha256_fd(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _HASH_CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        count = os.pwrite(fd, view, offset)
        view = view[count:]
        offset += count


def fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable; some platforms cannot open directories."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
