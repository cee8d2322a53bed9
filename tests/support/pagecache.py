"""Which pages of a file are still only in the page cache: what a power cut would lose.

``cachestat(2)`` (Linux 6.5+) counts, for a byte range of an open file, the pages that are
dirty (written, not yet on the disk) or under write-back (on their way). A page that is
neither was written back (or never written): the disk holds what the page cache holds. So
the file "as the disk has it" at some moment is, at least, its pages up to the first one that
is dirty or under write-back; :func:`disk_copy` makes that copy.

Where cachestat is missing, or on a filesystem whose pages never become clean (tmpfs: there
is no disk), :func:`page_states` raises :class:`Unsupported` and the tests that need it skip.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
#: cachestat's number, the same on every architecture (the unified syscall table).
_NR_CACHESTAT = 451


class Unsupported(Exception):
    """No way to tell here which pages are on the disk."""


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")
    ]


_libc = ctypes.CDLL(None, use_errno=True)


def _cachestat(fd: int, offset: int, length: int) -> _Stat:
    stat = _Stat()
    span = _Range(offset, length)
    if _libc.syscall(_NR_CACHESTAT, fd, ctypes.byref(span), ctypes.byref(stat), 0) != 0:
        code = ctypes.get_errno()
        if code in (errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
            raise Unsupported(f"cachestat: {os.strerror(code)}")
        raise OSError(code, os.strerror(code))
    return stat


def page_states(path: Path) -> str:
    """One letter per page of ``path``: ``D`` dirty or under write-back (not on the disk
    yet), ``.`` clean (the disk has it, or it is not cached: only clean pages are evicted)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        pages = -(-os.fstat(fd).st_size // PAGE)
        states = []
        for index in range(pages):
            stat = _cachestat(fd, index * PAGE, PAGE)
            states.append("D" if stat.nr_dirty or stat.nr_writeback else ".")
        return "".join(states)
    finally:
        os.close(fd)


def unsynced(path: Path) -> int:
    """Pages of ``path`` not yet on the disk."""
    return page_states(path).count("D")


def disk_copy(path: Path, copy: Path, *, header_page: bool = True) -> int:
    """Copy what the disk holds of ``path`` for certain to ``copy``: the file up to its first
    page not on the disk; returns the bytes copied.

    With ``header_page``, page 0 does not count: it holds the WAV header, which every flush
    rewrites in place, so it is dirty after each flush until the next sync. Its other bytes
    are only ever appended; what the disk has of it is an older header, with the same bytes
    after it, and :func:`~callrec.media.wav.repair_wav` rewrites the header from the size."""
    states = page_states(path)
    start = 1 if header_page else 0
    first = states.find("D", start)
    size = path.stat().st_size if first < 0 else first * PAGE
    with path.open("rb") as src:
        data = src.read(size)
    copy.write_bytes(data)
    return len(data)


def check_supported(directory: Path) -> None:
    """Raise :class:`Unsupported` unless cachestat works and a synced file under
    ``directory`` reads as clean (not tmpfs)."""
    probe = directory / ".pagecache-probe"
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with probe.open("wb") as out:
            out.write(b"\0" * PAGE)
            out.flush()
            os.fsync(out.fileno())
        if unsynced(probe):
            raise Unsupported(f"pages under {directory} stay dirty after fsync (no disk: tmpfs?)")
    finally:
        probe.unlink(missing_ok=True)
