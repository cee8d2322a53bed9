"""Each tick's audio on the disk: after the tick's flushes, one sync, on the media I/O thread.

A flush (:meth:`~callrec.media.wav.WavWriter.flush`) leaves a recording's new audio and its
rewritten header in the page cache. A crash of the process keeps them; a power cut does not,
and the kernel writes them back on its own only once they are ``vm.dirty_expire_centisecs``
old (30 s by default). So every tick, right after its flushes and on the same thread (never
the event loop), :class:`DiskSync` makes them durable, as ``sync_mode`` says:

* ``syncfs`` (the default): one ``syncfs(2)`` of the recordings' filesystem writes back every
  file of the tick, with its size and, for a new file, its directory entry, in one pass, and
  waits for the disk. It writes back whatever else is dirty on that filesystem too: the
  journal and the sidecars beside the recordings (which count on it), a catalogue on the
  same disk (which commits with its own fsync anyway). Python's ``os`` has no
  syncfs, so it is called through ctypes; where the C library has none or the kernel answers
  ``ENOSYS``, the mode becomes ``fdatasync``.
* ``fdatasync``: each file of the tick in turn; the first time a file is synced, the
  directories from its own up to the recordings directory's parent as well (a new file's
  entry, a new day's directory), which ``fdatasync`` of the file does not cover.
* ``off``: nothing; the kernel's write-back decides (a power cut can lose up to ~35 s).

A failing sync (Linux reports write-back errors of the filesystem to syncfs) is logged once
per episode, and once more when syncs succeed again, never per tick, and ends no recording: a
write that fails already ends the recordings it hit, and what a sync could not write may still
reach the disk later. A sync slower than ``sync_interval`` stretches the tick, and with it what
a power cut can lose: logged once per episode too.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from callrec.engine import files
from callrec.media.wav import WavWriter

if TYPE_CHECKING:
    from callrec.engine.recording import Recording

logger = logging.getLogger(__name__)

SYNCFS: Final = "syncfs"
FDATASYNC: Final = "fdatasync"
OFF: Final = "off"
#: The values of the ``sync_mode`` setting.
MODES: Final = (SYNCFS, FDATASYNC, OFF)

_O_DIRECTORY: Final[int] = getattr(os, "O_DIRECTORY", 0)


def _load_syncfs() -> Callable[[int], int] | None:
    """The C library's ``syncfs``, or None where there is none (not Linux, an old libc)."""
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    # A ctypes call releases the GIL: the event loop runs while the disk works.
    return function


_syncfs: Final = _load_syncfs()


def syncfs(fd: int) -> None:
    """``syncfs(2)`` of the filesystem holding ``fd``; failures raise ``OSError`` with errno."""
    if _syncfs is None:
        raise OSError(errno.ENOSYS, "this C library has no syncfs")
    if _syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class DiskSync:
    """Makes each tick's flushed audio durable; used only on the engine's media I/O thread.

    ``interval`` is the tick (``sync_interval``): a sync slower than it is reported. The
    counters are for tests, benchmarks and operators."""

    def __init__(self, root: Path, mode: str = SYNCFS, *, interval: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"sync mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode == SYNCFS and _syncfs is None:
            logger.info("no syncfs in this C library: each recording is synced with fdatasync")
            mode = FDATASYNC
        self.root = root
        #: What is done each tick: ``syncfs``, ``fdatasync`` or ``off``.
        self.mode = mode
        self.interval = interval
        #: Syncs that succeeded (one syncfs, or one tick's batch of fdatasync).
        self.syncs = 0
        #: Syncs that failed.
        self.failures = 0
        #: Wall-clock seconds spent in syncs, in total and the longest one.
        self.seconds = 0.0
        self.slowest = 0.0
        self._episode_failures = 0
        self._slow = False
        # fdatasync mode: the files whose directory entries are known to be on the disk.
        self._entries: weakref.WeakSet[WavWriter] = weakref.WeakSet()

    def flush(self, recordings: list[Recording[Any]]) -> list[tuple[Recording[Any], OSError]]:
        """The tick's file work: flush every file (:func:`~callrec.engine.files.flush_files`),
        then make durable what reached them. Returns the write failures."""
        failed = files.flush_files(recordings)
        if self.mode == OFF:
            return failed
        hit = {id(rec) for rec, _ in failed}
        # A finishing recording's close() fsyncs its files; a failed one is being finished.
        writers = [
            writer
            for rec in recordings
            if not rec.finishing and id(rec) not in hit
            for writer in rec.writers
        ]
        if writers:
            self.sync(writers)
        return failed

    def sync(self, writers: Sequence[WavWriter]) -> None:
        """Put ``writers``' flushed data on the disk (in ``syncfs`` mode: the whole
        filesystem's). Never raises ``OSError``: a failure is counted and logged."""
        began = time.perf_counter()
        try:
            if self.mode == SYNCFS:
                self._sync_filesystem(writers)
            elif self.mode == FDATASYNC:
                self._sync_files(writers)
        except OSError as exc:
            self._failed(exc)
        else:
            self._succeeded()
        finally:
            self._timed(time.perf_counter() - began)

    def _sync_filesystem(self, writers: Sequence[WavWriter]) -> None:
        # Opened for each sync: no descriptor held between ticks, and a write-back error
        # nobody has seen yet is still reported to a descriptor opened after it.
        fd = os.open(self.root, os.O_RDONLY | _O_DIRECTORY)
        try:
            syncfs(fd)
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            logger.warning("syncfs is refused here (%s): syncing each file with fdatasync", exc)
            self.mode = FDATASYNC
            self._sync_files(writers)
        finally:
            os.close(fd)

    def _sync_files(self, writers: Sequence[WavWriter]) -> None:
        # Every file is tried even when one fails (one bad file must not leave the others
        # unsynced); the first error is raised at the end.
        error: OSError | None = None
        for writer in writers:
            try:
                writer.sync()
            except OSError as exc:
                error = error or exc
        new = [writer for writer in writers if writer not in self._entries]
        directories: dict[Path, None] = {}
        for writer in new:
            directories.update(dict.fromkeys(self._directories(writer.path)))
        entries = True
        for directory in directories:
            try:
                _fsync_directory(directory)
            except OSError as exc:
                error, entries = error or exc, False
        if entries:
            self._entries.update(new)
        if error is not None:
            raise error

    def _directories(self, path: Path) -> list[Path]:
        """The directories holding ``path``'s entry and its parents' up to the root's."""
        chain = [path.parent]
        if path.parent.is_relative_to(self.root):
            chain.extend(d for d in path.parent.parents if d.is_relative_to(self.root.parent))
        return chain

    def _failed(self, exc: OSError) -> None:
        self.failures += 1
        self._episode_failures += 1
        if self._episode_failures == 1:
            logger.error(
                "could not sync the recordings to the disk (%s: %s): recording goes on, but "
                "a power cut can lose the audio written since the last sync that succeeded",
                self.mode,
                exc,
            )

    def _succeeded(self) -> None:
        self.syncs += 1
        if self._episode_failures:
            logger.warning(
                "syncing the recordings works again, after %d failed syncs",
                self._episode_failures,
            )
            self._episode_failures = 0

    def _timed(self, seconds: float) -> None:
        self.seconds += seconds
        self.slowest = max(self.slowest, seconds)
        slow = bool(self.interval) and seconds > self.interval
        if slow and not self._slow:
            logger.warning(
                "a sync of the recordings took %.2f s, longer than sync_interval (%g s): a "
                "power cut can lose that much more audio (a slow or busy disk)",
                seconds,
                self.interval,
            )
        elif self._slow and not slow:
            logger.info("syncs of the recordings are within sync_interval again")
        self._slow = slow


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
