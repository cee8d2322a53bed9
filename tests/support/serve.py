"""``callrec serve`` as a real process (kill -9, workers, restarts): started with the test
settings, waited for until it serves, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.net import tcp_listeners
from tests.support.settings import serve_environment
from tests.support.waiting import wait_until

#: Seconds a server process may take to start (imports, migration, recovery, workers).
START_SECONDS = 30


def spawn_serve(
    tmp_path: Path, *args: str, log: Path | None = None, **settings: object
) -> subprocess.Popen[bytes]:
    """``callrec serve ARGS`` with :func:`~tests.support.settings.serve_environment`; its
    log (stderr) goes to ``log``, by default a new ``server-*.log`` in ``tmp_path``."""
    env = {**os.environ, **serve_environment(tmp_path, **settings)}
    log = log or tmp_path / f"server-{time.monotonic_ns()}.log"
    with log.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "callrec", "serve", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )


def _running(proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"server exited with {proc.returncode}")
    return True


def _wait_serving(proc: subprocess.Popen[bytes], serving: Callable[[], bool], what: str) -> None:
    try:
        wait_until(lambda: _running(proc) and serving(), what=what, timeout=START_SECONDS)
    except AssertionError:
        proc.kill()
        proc.wait()
        raise


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def start_serve(tmp_path: Path, port: int, **settings: object) -> subprocess.Popen[bytes]:
    """A server with its control port on ``port``; returns once it accepts connections
    (start-up recovery runs before it listens)."""
    proc = spawn_serve(tmp_path, control_port=port, **settings)
    _wait_serving(proc, lambda: _accepts(port), f"the server to listen on port {port}")
    return proc


def start_serve_workers(
    tmp_path: Path, port: int, workers: int, **settings: object
) -> subprocess.Popen[bytes]:
    """``callrec serve --workers N``; returns once all its processes listen on ``port``."""
    proc = spawn_serve(tmp_path, "--workers", str(workers), control_port=port, **settings)
    _wait_serving(
        proc,
        lambda: len(tcp_listeners(port)) == workers,
        f"the {workers} processes to listen on port {port}",
    )
    return proc


#: An OPTIONS request a SIP server answers once it serves.
_OPTIONS = (
    b"OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKp\r\n"
    b"From: <sip:p@x>;tag=1\r\nTo: <sip:probe@x>\r\nCall-ID: probe\r\nCSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def start_serve_sip(tmp_path: Path, sip_port: int, **settings: object) -> subprocess.Popen[bytes]:
    """A server with SIP over UDP on ``sip_port``; returns once SIP answers an OPTIONS."""
    proc = spawn_serve(
        tmp_path,
        sip_enabled=True,
        sip_host="127.0.0.1",
        sip_port=sip_port,
        sip_tcp=False,
        **settings,
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)

        def answers() -> bool:
            probe.sendto(_OPTIONS, ("127.0.0.1", sip_port))
            try:
                probe.recv(4096)
            except OSError:
                return False
            return True

        _wait_serving(proc, answers, f"SIP to answer on port {sip_port}")
    return proc


def terminate(proc: subprocess.Popen[bytes], timeout: float = 15) -> int | None:
    """SIGTERM (a graceful shutdown) and wait; killed when it takes longer than ``timeout``.
    Returns the exit status (negative: the signal that ended it)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
