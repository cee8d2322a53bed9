"""A callrec server of our own for a load test (``callrec loadtest --spawn``).

:func:`spawn_server` runs ``callrec serve`` as a child process on loopback, with a catalogue
and recordings directory of its own and web and SIP off, and ends it with SIGTERM (SIGKILL
after a timeout). The kernel ends the child if we die (:func:`die_with_parent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from callrec.sim.loadrun import LoadError

logger = logging.getLogger(__name__)

#: Media ports of a spawned server: below the kernel's ephemeral range (32768-60999), where
#: the generator's own sockets live.
SPAWN_MEDIA_PORT_MIN: Final = 20000
SPAWN_MEDIA_PORT_MAX: Final = 32767


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """``preexec_fn``: have the kernel end the child if we die (Linux), so no server or
    recorder outlives a killed load test."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 0)  # not the generator's raised priority


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class SpawnedServer:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    database_url: str
    recordings_dir: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def died(self) -> str | None:
        """Why the server is no longer running (with the end of its log), or None."""
        code = self.process.poll()
        if code is None:
            return None
        return f"the server exited during the run (status {code}); its log ends:\n{_tail(self.log)}"


@contextlib.asynccontextmanager
async def spawn_server(
    *,
    calls: int,
    workdir: Path | None = None,
    server_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    start_timeout: float = 60.0,
    stop_timeout: float = 60.0,
) -> AsyncIterator[SpawnedServer]:
    """Run ``callrec serve`` as a child process on loopback with a catalogue and recordings
    directory of its own (web and SIP off); SIGTERM and wait for it on the way out."""
    owned = workdir is None
    root = Path(tempfile.mkdtemp(prefix="callrec-loadtest-")) if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    port = free_tcp_port()
    recordings = root / "recordings"
    url = f"sqlite:///{root / 'catalog.db'}"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
    child_env.update(
        CALLREC_WEB_ENABLED="false",
        CALLREC_SIP_ENABLED="false",
        CALLREC_CONTROL_HOST="127.0.0.1",
        CALLREC_CONTROL_PORT=str(port),
        CALLREC_MEDIA_HOST="127.0.0.1",
        CALLREC_MEDIA_PORT_MIN=str(SPAWN_MEDIA_PORT_MIN),
        CALLREC_MEDIA_PORT_MAX=str(SPAWN_MEDIA_PORT_MAX),
        CALLREC_RECORDINGS_DIR=str(recordings),
        CALLREC_DATABASE_URL=url,
        CALLREC_MAX_SESSIONS=str(max(5000, calls + 10)),
        CALLREC_MAX_CONNECTIONS=str(max(10000, calls + 100)),
        # Every simulated phone connects from 127.0.0.1: one source, as many connections as
        # calls (a real site's phones each have an address of their own).
        CALLREC_MAX_CONNECTIONS_PER_SOURCE=str(max(10000, calls + 100)),
    )
    child_env.update(env or {})
    log_path = root / "server.log"
    command = [sys.executable, "-m", "callrec", "serve", *server_args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )
    try:
        await _wait_listening(proc, port, start_timeout, log_path)
        yield SpawnedServer("127.0.0.1", port, proc, url, recordings, log_path)
    finally:
        await _terminate(proc, stop_timeout)
        if owned:
            import shutil

            shutil.rmtree(root, ignore_errors=True)


async def _wait_listening(
    proc: subprocess.Popen[bytes], port: int, timeout: float, log: Path
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if proc.poll() is not None:
            raise LoadError(f"the server exited with status {proc.returncode}:\n{_tail(log)}")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise LoadError(f"the server did not listen on port {port} within {timeout:g} s:\n{_tail(log)}")


async def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM (the server finalises what is open), then SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while proc.poll() is None and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if proc.poll() is None:
        logger.warning("server %d did not stop within %g s; killing it", proc.pid, timeout)
        proc.kill()
        proc.wait(10)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
