"""The journal's file: one JSON line per catalogue write, and the recording's sidecar.

Each process that records appends to a file of its own in the journal directory (beside the
recordings, on their filesystem) and holds an exclusive ``flock`` on it while it lives, so a
file nobody holds is an orphan: its process ended, and what it did not apply is replayed by
the next main process (:func:`orphans`). Lines are appended with one ``write`` per batch;
a line cut short by a crash (no newline, or no JSON) is skipped when read.

A recording's sidecar (``<file>.json``) holds its own start and finish entries: the catalogue
can be rebuilt from the disk alone (``callrec catalogue rebuild``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from callrec import filemodes
from callrec.catalog import FinishRecording, NewRecording, StreamCounters
from callrec.catalog.replay import JournalCheckpoint, JournalEntry, JournalFinish, JournalStart

logger = logging.getLogger(__name__)

#: The directory beside the recordings that holds callrec's own files.
STATE_DIR: Final = ".callrec"
#: Name ending of journal files.
SUFFIX: Final = ".journal"
#: Name ending of a recording's sidecar, appended to its file's name.
SIDECAR_SUFFIX: Final = ".json"
#: Version of the sidecar's layout.
SIDECAR_VERSION: Final = 1


def journal_dir(root: Path) -> Path:
    """Where the journals of a recordings directory are: on its filesystem."""
    return root / STATE_DIR / "journal"


# -- entries <-> JSON -------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, StreamCounters):
        return value.as_dict()
    return value


def entry_json(entry: JournalEntry) -> dict[str, Any]:
    if isinstance(entry, JournalStart):
        fields = {f.name: _plain(getattr(entry.rec, f.name)) for f in dataclasses.fields(entry.rec)}
        return {"op": "start", "rec": fields}
    if isinstance(entry, JournalCheckpoint):
        return {"op": "checkpoint", "counters": {u: c.as_dict() for u, c in entry.counters.items()}}
    finish = {
        f.name: _plain(getattr(entry.finish, f.name))
        for f in dataclasses.fields(entry.finish)
        if f.name != "rec_id"
    }
    return {"op": "finish", "uid": entry.uid, "finish": finish}


def entry_from_json(data: Any) -> JournalEntry:
    """The entry ``data`` holds; raises (ValueError, KeyError, TypeError, CatalogError)
    when it is not one."""
    if not isinstance(data, dict):
        raise ValueError("not an object")
    op = data.get("op")
    if op == "start":
        fields = dict(data["rec"])
        fields["start_time"] = datetime.fromisoformat(fields["start_time"])
        return JournalStart(NewRecording(**fields))
    if op == "checkpoint":
        counters = {str(u): StreamCounters(**c) for u, c in data["counters"].items()}
        return JournalCheckpoint(counters)
    if op == "finish":
        fields = dict(data["finish"])
        fields["end_time"] = datetime.fromisoformat(fields["end_time"])
        if fields.get("counters") is not None:
            fields["counters"] = StreamCounters(**fields["counters"])
        return JournalFinish(str(data["uid"]), FinishRecording(rec_id=0, **fields))
    raise ValueError(f"unknown journal entry {op!r}")


def encode(entry: JournalEntry) -> bytes:
    text = json.dumps(entry_json(entry), ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "surrogatepass") + b"\n"


def decode_lines(data: bytes, source: str) -> Iterator[JournalEntry]:
    """The entries of a journal's bytes; a line that is cut short or unreadable is logged
    and skipped (a crash in the middle of an append leaves at most the last one so)."""
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            yield entry_from_json(json.loads(line.decode("utf-8", "surrogatepass")))
        except Exception as exc:
            logger.warning("journal %s line %d unreadable, skipped: %s", source, number, exc)


# -- the file ---------------------------------------------------------------------------------


class JournalFile:
    """The journal file of this process: created, locked, appended, truncated."""

    def __init__(self, path: Path) -> None:
        self.path = path
        filemodes.make_dirs(path.parent)
        self._fd = filemodes.open_or_create(path, os.O_WRONLY | os.O_APPEND, private=True)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(self._fd)
            raise
        #: Bytes of whole lines in the file (what a failed append is cut back to).
        self.size = os.fstat(self._fd).st_size

    def append(self, data: bytes) -> None:
        """Append whole lines; on failure (disk full) nothing of them stays."""
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):  # a cut line is skipped when read
                os.ftruncate(self._fd, self.size)
            raise
        self.size += len(data)

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def truncate(self) -> None:
        """Empty the file (everything in it is in the catalogue)."""
        os.ftruncate(self._fd, 0)
        self.size = 0

    def close(self, *, remove: bool) -> None:
        if remove:
            self.path.unlink(missing_ok=True)  # while still locked: nobody replays it
        os.close(self._fd)


def journal_name(name: str, pid: int, tag: str, node: str | None) -> str:
    """A journal's file name: ``<name>-<pid>-<tag>[@<node>].journal``."""
    return f"{name}-{pid}-{tag}{'@' + node if node else ''}{SUFFIX}"


def journal_node(path: Path) -> str | None:
    """The node a journal file's name gives (:func:`journal_name`); None for none."""
    stem = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name
    _, at, node = stem.rpartition("@")
    return node if at else None


def orphans(
    directory: Path, own: Path | None, *, node: str | None = None
) -> Iterator[tuple[Path, int]]:
    """Journal files no live process holds, each with a file descriptor that now holds its
    lock (the caller replays the file, then removes it and closes the descriptor). With
    ``node``, another node's journals are left alone: on a shared recordings directory its
    lock may not tell across machines whether it still runs."""
    try:
        names = sorted(directory.glob(f"*{SUFFIX}"))
    except OSError:
        return
    for path in names:
        if own is not None and path == own:
            continue
        if node is not None and journal_node(path) not in (None, node):
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # its process is alive
            continue
        yield path, fd


def read_fd(fd: int) -> bytes:
    chunks: list[bytes] = []
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


# -- sidecars ---------------------------------------------------------------------------------


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def sidecar_bytes(start: JournalStart, finish: JournalFinish | None) -> bytes:
    data = {
        "callrec_sidecar": SIDECAR_VERSION,
        "start": entry_json(start),
        "finish": entry_json(finish) if finish is not None else None,
    }
    # One line, no indent: an indent makes json use its pure-Python encoder, several times
    # slower, and a start writes its sidecar on the event loop (`jq .` shows it indented).
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "surrogatepass"
    )


def create_sidecar(path: Path, start: JournalStart) -> None:
    """The sidecar of a recording being opened (exclusively: never another's)."""
    filemodes.write_new(path, sidecar_bytes(start, None))


def replace_sidecar(path: Path, start: JournalStart, finish: JournalFinish) -> None:
    """The sidecar of a finished recording, replaced whole (never half-written). Not synced
    here: the next tick's sync does it, and a stop does not wait for a second fsync."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)  # left by a crash between the write and the rename
    filemodes.write_new(temporary, sidecar_bytes(start, finish))
    os.replace(temporary, path)


def read_sidecar(path: Path) -> tuple[JournalStart, JournalFinish | None]:
    """The entries of a sidecar; ValueError when it is not one of ours or is damaged."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8", "surrogatepass"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("callrec_sidecar") != SIDECAR_VERSION:
        raise ValueError(f"{path} is not a callrec sidecar")
    try:
        start = entry_from_json(data["start"])
        finish = entry_from_json(data["finish"]) if data.get("finish") else None
    except Exception as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if not isinstance(start, JournalStart) or not (
        finish is None or isinstance(finish, JournalFinish)
    ):
        raise ValueError(f"{path}: entries in the wrong places")
    return start, finish
