"""Which media ports were used lately, remembered across restarts.

A phone streams to the port its start answer named until it stops, and some keep streaming
when the server that answered is gone (a restart, a crash). A port handed to a new call while
an old call's phone still streams to it would record the wrong call: the new recording holds
another conversation, catalogued as this one. So a port rests for ``quarantine`` seconds after
its call ended, and the ports in use when a process died rest from the moment that is found.

Each process appends what it does to a file of its own under ``<recordings>/.callrec/ports/``
(``h PORT TIME`` when a port is handed out, ``r PORT TIME`` when it is released: one short
``O_APPEND`` write, no sync: a lost tail only shortens a rest), and holds a lock on it while it
lives. A process starting reads every file: the live ones' rests, and the dead ones' (whose
lock it can take) in-use ports as released now; it then removes the dead ones' files.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Final

from callrec import filemodes

logger = logging.getLogger(__name__)

SUFFIX: Final = ".ports"
#: Own-file lines beyond which it is rewritten with only what still matters.
COMPACT_LINES: Final = 20_000


def ports_dir(state_dir: Path) -> Path:
    return state_dir / "ports"


class PortMemory:
    """Recently used ports of one process, and what the others (live or dead) left."""

    def __init__(
        self,
        directory: Path | None,
        quarantine: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.quarantine = quarantine
        self._clock = clock
        #: Port -> when it was released (wall clock); ports in use are not here.
        self._released: dict[int, float] = {}
        self._in_use: set[int] = set()
        self._fd: int | None = None
        self._path: Path | None = None
        self._lines = 0

    # -- life cycle ----------------------------------------------------------------------

    def open(self) -> None:
        """Read what every process left and start this one's file. Never raises: without
        its directory the memory still works, for this process's life."""
        if self.directory is None or self.quarantine <= 0:
            return
        now = self._clock()
        try:
            filemodes.make_dirs(self.directory)
            names = sorted(self.directory.glob(f"*{SUFFIX}"))
        except OSError as exc:
            logger.warning("media port memory unavailable (%s): ports rest only until exit", exc)
            return
        for path in names:
            self._read_other(path, now)
        self._start_own_file()

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- use -----------------------------------------------------------------------------

    def resting(self, port: int, now: float | None = None) -> bool:
        """Whether ``port`` was released less than ``quarantine`` seconds ago."""
        released = self._released.get(port)
        if released is None:
            return False
        if (self._clock() if now is None else now) - released >= self.quarantine:
            del self._released[port]
            return False
        return True

    def released_at(self, port: int) -> float:
        """When ``port`` was last released (wall clock; 0: not lately)."""
        return self._released.get(port, 0.0)

    def hold(self, port: int) -> None:
        self._in_use.add(port)
        self._released.pop(port, None)
        self._append(f"h {port} {self._clock():.3f}\n")

    def release(self, port: int) -> None:
        if port not in self._in_use:
            return
        self._in_use.discard(port)
        if self.quarantine <= 0:
            return
        now = self._clock()
        self._released[port] = now
        self._append(f"r {port} {now:.3f}\n")

    # -- files ---------------------------------------------------------------------------

    def _read_other(self, path: Path, now: float) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                dead = True
            except BlockingIOError:
                dead = False  # its process lives (a worker, an orphan of the last server)
            data = _read_all(fd)
        finally:
            os.close(fd)
        in_use, released = _parse(data)
        for port, at in released.items():
            if now - at < self.quarantine and at > self._released.get(port, 0.0):
                self._released[port] = at
        if dead:
            # Its calls' phones may stream on: their ports rest from now.
            for port in in_use:
                self._released[port] = now
            with contextlib.suppress(OSError):
                path.unlink()

    def _start_own_file(self) -> None:
        assert self.directory is not None
        path = self.directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        try:
            fd = filemodes.create(path, os.O_WRONLY | os.O_APPEND)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            logger.warning("cannot write the media port memory %s: %s", path, exc)
            return
        self._fd, self._path = fd, path
        # What this process knows of the others' rests is its own to keep now: the files
        # of dead processes are gone.
        self._write_state()

    def _write_state(self) -> None:
        lines = [f"r {p} {at:.3f}\n" for p, at in self._released.items()]
        lines += [f"h {p} {self._clock():.3f}\n" for p in self._in_use]
        self._lines = 0
        self._append("".join(lines), count=len(lines))

    def _append(self, text: str, *, count: int = 1) -> None:
        fd = self._fd
        if fd is None or not text:
            return
        try:
            os.write(fd, text.encode("ascii"))
        except OSError as exc:
            logger.warning("media port memory write failed (%s); no longer written", exc)
            self.close()
            return
        self._lines += count
        if self._lines > COMPACT_LINES:
            self._compact()

    def _compact(self) -> None:
        """Rewrite this process's file with only what still matters (same lock, new inode)."""
        path, old_fd = self._path, self._fd
        if path is None or old_fd is None:
            return
        now = self._clock()
        self._released = {p: at for p, at in self._released.items() if now - at < self.quarantine}
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.unlink(missing_ok=True)
            fd = filemodes.create(tmp, os.O_WRONLY | os.O_APPEND)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.replace(tmp, path)
        except OSError as exc:
            logger.warning("cannot compact the media port memory %s: %s", path, exc)
            self._lines = 0
            return
        self._fd = fd
        os.close(old_fd)
        self._write_state()


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(data: bytes) -> tuple[set[int], dict[int, float]]:
    """Ports in use at the end of a file, and when each other port was last released."""
    in_use: set[int] = set()
    released: dict[int, float] = {}
    for line in data.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue  # a torn last line
        try:
            port, at = int(parts[1]), float(parts[2])
        except ValueError:
            continue
        if not 0 < port < 65536:
            continue
        if parts[0] == b"h":
            in_use.add(port)
            released.pop(port, None)
        elif parts[0] == b"r":
            in_use.discard(port)
            released[port] = at
    return in_use, released
