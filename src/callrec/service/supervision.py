"""Supervision of ``callrec serve --workers N``: the phones are served when the main process dies.

Every process of a pool listens on the phones' control port (``SO_REUSEPORT``) and records
its own calls into the catalogue itself, so a media worker needs nothing from the main
process to take a call. When the main process dies (``kill -9``, a crash, the OOM killer) its
workers are *orphaned*: they keep listening and recording, answering new calls ``success``.
The rule for what an orphan does later rests on two ``flock`` locks in ``.callrec/`` under
the recordings directory (the one thing every generation of a server shares):

* ``main.lock``: held by the main process of ``callrec serve`` for as long as it runs (the
  kernel lets go of it when the process dies, however it dies). A second ``callrec serve`` on
  the same recordings is refused: its start-up recovery would finish the first one's calls.
* ``workers/*.lock``: one per media worker, held while it lives, naming its media port slice:
  whose recordings are still being written by a live process (:func:`live_workers`).

An orphan looks every :data:`ORPHAN_POLL_SECONDS` whether a new main process holds
``main.lock`` and serves the control port: a socket listening on the orphan's control address
that was not there when it was orphaned (or the new server's control address differs, so
there is nothing to wait for). Then it **hands over**: it closes its listening socket (the
kernel sends new connections to the new server's sockets) and exits once its own calls and
control connections have ended by themselves; no call is cut, and each is bounded by
``max_duration``. Waiting for the new server to listen, not only for its lock, leaves no
moment without a listener: the new main takes the lock before its start-up recovery.

When nothing restarts the main process, orphans keep serving for as long as they live: the
port stays answered and calls are recorded; the web UI, SIP and the live view are gone until
a main process runs again. SIGTERM stops an orphan as it stops any worker (every open
recording finalised ``shutdown``).

Linux only, as the pool is: ``SO_REUSEPORT`` shares a port between processes of one user,
and the listening sockets are read from ``/proc/net/tcp`` and ``tcp6``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from callrec.catalog import RecordingInfo
from callrec.config import Settings

logger = logging.getLogger(__name__)

#: The folder of the server's own state under the recordings directory (not a recording).
STATE_DIR: Final = ".callrec"
#: Seconds between an orphaned worker's looks for a new main process.
ORPHAN_POLL_SECONDS: Final = 1.0
#: How long a starting main process retries ``main.lock``: an orphan's look holds it for a
#: few microseconds, a running server for its whole life.
LOCK_RETRY_SECONDS: Final = 1.0
LOCK_RETRY_INTERVAL: Final = 0.01
#: ``st`` of a listening socket in ``/proc/net/tcp``.
_TCP_LISTEN: Final = "0A"


class MainLockHeld(OSError):
    """Another ``callrec serve`` runs on the same recordings directory."""


def state_dir(recordings_dir: Path) -> Path:
    return recordings_dir.resolve() / STATE_DIR


def main_lock_path(recordings_dir: Path) -> Path:
    return state_dir(recordings_dir) / "main.lock"


def _read_json(path: Path) -> dict[str, Any] | None:
    """A lock file's JSON; None when unreadable or being written (looked at again later)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# -- the main process's lock ------------------------------------------------------------------


@contextlib.contextmanager
def main_lock(settings: Settings) -> Iterator[None]:
    """Hold ``main.lock`` while the block runs (the main process of ``callrec serve``).

    Raises :class:`MainLockHeld` when another live main process holds it. When the lock file
    cannot be made for want of space (a full disk on the very first start), the server runs
    without it, with a warning: recording matters more, and only a hand-over from orphaned
    workers of an earlier run is lost. Any other error (no permission) is raised: such a
    server could not write its recordings either."""
    path = main_lock_path(settings.recordings_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        logger.warning("running without %s (%s): orphaned workers will not hand over", path, exc)
        yield
        return
    try:
        _lock_retrying(fd, path)
        # Who holds it, for an operator, for the refusal of a second server, and for orphans:
        # a new server on another control address leaves them nothing to wait for.
        info = {
            "pid": os.getpid(),
            "control_host": settings.control_host,
            "control_port": settings.control_port,
        }
        with contextlib.suppress(OSError):  # a full disk: the lock itself still holds
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        orphans = live_workers(settings.recordings_dir)
        if orphans:
            logger.warning(
                "%d media workers of an earlier server still record (pids %s): they hand over "
                "once this server listens and exit when their calls end",
                len(orphans),
                ", ".join(str(w.pid) for w in orphans),
            )
        yield
    finally:
        os.close(fd)  # the lock goes with it; the file stays (removing it would race)


def _lock_retrying(fd: int, path: Path) -> None:
    deadline = time.monotonic() + LOCK_RETRY_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = _read_json(path) or {}
                raise MainLockHeld(
                    f"another callrec serve (pid {holder.get('pid', '?')}) records into "
                    f"{path.parent.parent} ({path} is locked); stop it first"
                ) from None
            time.sleep(LOCK_RETRY_INTERVAL)


def main_running(recordings_dir: Path) -> bool:
    """Whether a main process holds ``main.lock`` now (a shared lock probes it: orphans
    looking at the same moment do not block each other)."""
    try:
        fd = os.open(main_lock_path(recordings_dir), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also lets go of the probe's shared lock
    return False


# -- the media workers' locks -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live media worker: its pid and the media port slice its recordings are on."""

    pid: int
    media_port_min: int
    media_port_max: int


class WorkerLock:
    """Held by a media worker for its whole life, naming its media port slice."""

    def __init__(self, settings: Settings) -> None:
        folder = state_dir(settings.recordings_dir) / "workers"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Written and locked under a name no reader looks at, then renamed: a reader never
        # finds the file unlocked while its worker lives (and takes it for a dead one's).
        hidden = folder / f".{name}.tmp"
        self.path = folder / f"{name}.lock"
        self._fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            info = WorkerInfo(os.getpid(), settings.media_port_min, settings.media_port_max)
            os.write(self._fd, json.dumps(dataclasses.asdict(info)).encode())
            os.rename(hidden, self.path)
        except BaseException:
            os.close(self._fd)
            hidden.unlink(missing_ok=True)
            raise

    def close(self) -> None:
        """Remove the file (still locked: nobody takes it for a dead worker's) and let go."""
        if self._fd < 0:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = -1


def worker_lock(settings: Settings) -> WorkerLock | None:
    """This worker's :class:`WorkerLock`; None, with a warning, when its file cannot be made
    (a full or read-only disk): recording matters more. A main process starting meanwhile
    would then take this worker's open recordings for crashed ones."""
    try:
        return WorkerLock(settings)
    except OSError as exc:
        logger.warning("media worker without its lock file (%s)", exc)
        return None


def live_workers(recordings_dir: Path) -> list[WorkerInfo]:
    """The media workers alive now (orphans of an earlier main process included); the
    files of dead ones are removed."""
    folder = state_dir(recordings_dir) / "workers"
    try:
        paths = sorted(folder.glob("*.lock"))
    except OSError:
        return []
    found: list[WorkerInfo] = []
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # removed meanwhile: its worker has exited
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            data = _read_json(path)
            if data is not None:
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    found.append(
                        WorkerInfo(
                            int(data["pid"]),
                            int(data["media_port_min"]),
                            int(data["media_port_max"]),
                        )
                    )
        else:
            # Unlocked: its worker died without removing it (kill -9).
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return found


def recoverable(recordings_dir: Path) -> Callable[[RecordingInfo], bool]:
    """For start-up recovery (``only``): a row a live media worker is not recording.

    A main process that starts while orphaned workers of the one before still record must
    leave their rows alone: they are not crashed, the orphans finish them."""
    slices = [(w.media_port_min, w.media_port_max) for w in live_workers(recordings_dir)]

    def pick(rec: RecordingInfo) -> bool:
        port = rec.media_port
        if rec.source != "server" or port is None:
            return True  # SIP calls and imports are the main process's own
        return not any(low <= port <= high for low, high in slices)

    return pick


# -- an orphaned worker: is there a new server to hand over to? -------------------------------


def _tcp_table() -> Iterator[tuple[str, str, str, int]]:
    """(table, local address as the kernel prints it, state, inode) of every TCP socket."""
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/net/{table}") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9:
                yield table, parts[1], parts[3], int(parts[9])


def control_listeners(sock: socket.socket) -> set[int] | None:
    """Inodes of the sockets listening on the same address and port as ``sock`` (itself
    included, and with ``SO_REUSEPORT`` those of other processes); None when the kernel's
    table cannot tell (no ``/proc``)."""
    own = os.fstat(sock.fileno()).st_ino
    rows = list(_tcp_table())
    mine = next(((t, a) for t, a, _, inode in rows if inode == own), None)
    if mine is None:
        return None
    # Compared as the kernel prints them: no byte-order decoding to get wrong.
    return {inode for t, a, st, inode in rows if (t, a) == mine and st == _TCP_LISTEN}


class Succession:
    """An orphaned worker's view of whether a new main process serves its control port."""

    def __init__(self, settings: Settings, sock: socket.socket) -> None:
        self.settings = settings
        self.sock = sock
        #: The listeners when the main process died: this worker's and its siblings'.
        self.known = control_listeners(sock) or set()

    def taken_over(self) -> bool:
        """A new main process runs and listens on this worker's control address (or on
        another one: then this one is not served by anybody but orphans any more)."""
        if not main_running(self.settings.recordings_dir):
            return False
        holder = _read_json(main_lock_path(self.settings.recordings_dir)) or {}
        host, port = holder.get("control_host"), holder.get("control_port")
        if host is not None and host != self.settings.control_host:
            return True
        if port not in (None, 0, self.settings.control_port):
            return True
        current = control_listeners(self.sock)
        if current is None:
            return True  # the kernel's table is unreadable: the lock alone decides
        return bool(current - self.known)
