"""``on_complete_command``: a program run after each recording, as a job.

The program gets the recording's fields in ``CALLREC_*`` environment variables (docs/jobs.md
lists them), no shell (the setting is split as a shell would split it, and run directly),
no standard input, and ``on_complete_timeout`` seconds: then it is killed, with every process
it started (it runs in a session of its own). Its exit status and the end of its output
(standard output and error together) go to the job's history; a nonzero exit status or a
timeout is retried like any failed job.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from callrec.catalog import RecordingInfo
from callrec.catalog.jobs import clip
from callrec.config import Settings
from callrec.jobs.runner import JobFailed, JobKind, RetryPolicy

KIND: Final = "on_complete_command"
#: Characters of the program's output kept in the job's history (its end).
OUTPUT_KEPT: Final = 1000

#: Environment variable -> recording field.
ENVIRONMENT: Final = {
    "CALLREC_ID": "id",
    "CALLREC_UID": "uid",
    "CALLREC_SOURCE": "source",
    "CALLREC_SESSION_ID": "session_id",
    "CALLREC_DEVICE": "device",
    "CALLREC_DIRECTION": "direction",
    "CALLREC_LOCAL_NUMBER": "local_number",
    "CALLREC_LOCAL_NAME": "local_name",
    "CALLREC_REMOTE_NUMBER": "remote_number",
    "CALLREC_REMOTE_NAME": "remote_name",
    "CALLREC_CODEC": "codec",
    "CALLREC_SAMPLE_RATE": "sample_rate",
    "CALLREC_CHANNELS": "channels",
    "CALLREC_START_TIME": "start_time",
    "CALLREC_END_TIME": "end_time",
    "CALLREC_DURATION": "duration",
    "CALLREC_SIZE_BYTES": "size_bytes",
    "CALLREC_SHA256": "sha256",
    "CALLREC_STATUS": "status",
    "CALLREC_STOP_REASON": "stop_reason",
}


def command_payload(recording: RecordingInfo, root: Path) -> dict[str, str]:
    """The environment variables of ``recording``'s run (``CALLREC_PATH`` absolute)."""
    env: dict[str, str] = {}
    for name, field in ENVIRONMENT.items():
        value: Any = getattr(recording, field)
        if value is None:
            value = ""
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        env[name] = str(value)
    env["CALLREC_PATH"] = str(root.joinpath(*recording.path.split("/")))
    return env


class Command:
    """The handler of :data:`KIND` jobs (blocking: it runs on its kind's threads)."""

    def __init__(self, command: str, *, timeout: float) -> None:
        self.argv = shlex.split(command)
        self.timeout = timeout
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Kill the programs running now (the server stops; their jobs run again later)."""
        with self._lock:
            running = list(self._running)
        for process in running:
            _kill_group(process)

    def __call__(self, job: Any) -> str:
        # callrec's own settings (CALLREC_DATABASE_URL, CALLREC_WEBHOOK_SECRET...) are not
        # the program's business, and would mix with the recording's CALLREC_* fields.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
        env.update(_clean(job.payload.get("env", {})))
        try:
            process = subprocess.Popen(
                self.argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise JobFailed(f"cannot run {self.argv[0]}: {exc.strerror or exc}") from None
        with self._lock:
            self._running.add(process)
        try:
            output, _ = process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            output, _ = process.communicate()
            tail = _tail(output)
            raise JobFailed(
                f"killed after {self.timeout:g} s (on_complete_timeout){': ' if tail else ''}{tail}"
            ) from None
        finally:
            with self._lock:
                self._running.discard(process)
        tail = _tail(output)
        status = process.returncode
        said = f"exit status {status}{': ' if tail else ''}{tail}"
        if status != 0:
            raise JobFailed(said)
        return said


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _tail(output: bytes | None) -> str:
    text = (output or b"")[-4 * OUTPUT_KEPT :].decode("utf-8", "replace").strip()
    return clip(text, OUTPUT_KEPT)


def _clean(env: Mapping[str, Any]) -> dict[str, str]:
    """No NUL can go into an environment variable."""
    return {str(k): str(v).replace("\x00", "\ufffd") for k, v in env.items()}


def command_kind(settings: Settings) -> JobKind:
    return JobKind(
        name=KIND,
        handler=Command(settings.on_complete_command, timeout=settings.on_complete_timeout),
        concurrency=2,
        retry=RetryPolicy(max_attempts=8, max_age=timedelta(days=1), first=10.0, cap=3600.0),
        lease=timedelta(seconds=max(60.0, 2 * settings.on_complete_timeout)),
    )
