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

Whose recordings a live process is still writing needs no lock of its own here: each WAV file
is ``flock``ed by its writer (:func:`callrec.media.wav.being_written`), so start-up recovery
leaves an orphan's calls alone, and the orphan catalogues them as they end.

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
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from callrec import filemodes
from callrec.config import Settings
from callrec.engine import journalfile

logger = logging.getLogger(__name__)

#: The folder of the server's own state under the recordings directory (not a recording).
STATE_DIR: Final = journalfile.STATE_DIR
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
        filemodes.make_dirs(path.parent)
        fd = filemodes.open_or_create(path, os.O_RDWR, private=True)
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
