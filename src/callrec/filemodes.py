"""The modes and group of every file and folder callrec creates, whatever the umask.

Recordings are calls: by default only callrec's user reads and writes them (``0640``: its
group may read, say a backup user) and nobody else on the machine may list their folders
(``0750``). The umask is not enough: a shell's 022 would leave every call readable by every
local user. So each file is created with the mode (``os.open(path, flags, mode)``) and then
``fchmod``-ed to it (the umask only ever removes bits), and each folder level created is
``chmod``-ed; with ``file_group`` set, both are ``chown``-ed to that group.

The modes are a process-wide policy, like the umask they override: each process (``callrec
serve``, its media workers, a command of the command line) sets them once from its settings
with :func:`configure`; until then the defaults apply. Secrets (the journal, locks, the
one-time admin password, the TLS key) are ``private``: ``0600`` and never the group.
"""

from __future__ import annotations

import contextlib
import grp
import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from callrec.exceptions import ConfigError

DEFAULT_FILE_MODE = 0o640
PRIVATE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def parse_mode(text: str) -> int:
    """``"0640"`` -> ``0o640``; a ConfigError says what is wrong with anything else."""
    raw = text.strip().lower().removeprefix("0o")
    try:
        mode = int(raw, 8)
    except ValueError as exc:
        raise ConfigError(f"file_mode must be octal like 0640, got {text!r}") from exc
    if mode & ~0o777:
        raise ConfigError(f"file_mode must be permission bits (at most 0777), got {text!r}")
    if mode & 0o600 != 0o600:
        raise ConfigError(f"file_mode must let callrec read and write its files, got {text!r}")
    if mode & 0o002:
        raise ConfigError(f"file_mode must not let every local user write, got {text!r}")
    return mode


def dir_mode_for(file_mode: int) -> int:
    """The folder mode matching a file mode: whoever may read a file may list its folder."""
    mode = file_mode | 0o700
    for read, search in ((0o040, 0o010), (0o004, 0o001)):
        if file_mode & read:
            mode |= search
    return mode


@dataclass(frozen=True, slots=True, kw_only=True)
class FileModes:
    """What files and folders are created with."""

    #: Permission bits of recordings, sidecars, the catalogue, exports.
    file: int = DEFAULT_FILE_MODE
    #: Permission bits of the folders created for them.
    directory: int = dir_mode_for(DEFAULT_FILE_MODE)
    #: Group they are given; None: the process's own (the file system's rule).
    gid: int | None = None

    @classmethod
    def from_settings(cls, file_mode: str, file_group: str) -> FileModes:
        """From the ``file_mode`` and ``file_group`` settings; a ConfigError when the group
        does not exist or this process may not give files to it."""
        mode = parse_mode(file_mode)
        return cls(file=mode, directory=dir_mode_for(mode), gid=resolve_group(file_group))


def resolve_group(name: str) -> int | None:
    """The gid of ``file_group`` (a name or a number); None when empty."""
    name = name.strip()
    if not name:
        return None
    try:
        gid = int(name) if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError as exc:
        raise ConfigError(f"file_group {name!r}: no such group") from exc
    # chown to a group is allowed to root and to members of it (the kernel's rule).
    if os.geteuid() != 0 and gid != os.getegid() and gid not in os.getgroups():
        raise ConfigError(
            f"file_group {name!r}: this process (uid {os.geteuid()}) is not a member of "
            f"group {gid}, so it may not give files to it"
        )
    return gid


_current = FileModes()


def configure(modes: FileModes) -> None:
    """Set the modes this process creates files with (once, at start)."""
    global _current
    _current = modes


def current() -> FileModes:
    return _current


def _apply_fd(fd: int, *, private: bool, directory: bool = False) -> None:
    modes = _current
    if private:
        mode = PRIVATE_DIR_MODE if directory else PRIVATE_MODE
    else:
        mode = modes.directory if directory else modes.file
    os.fchmod(fd, mode)
    if modes.gid is not None and not private:
        os.fchown(fd, -1, modes.gid)


def create(path: str | os.PathLike[str], flags: int, *, private: bool = False) -> int:
    """``os.open`` of a new file (``O_CREAT | O_EXCL`` are added) with the configured mode and
    group; returns the descriptor."""
    modes = _current
    mode = PRIVATE_MODE if private else modes.file
    fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
    try:
        _apply_fd(fd, private=private)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return fd


def open_or_create(path: str | os.PathLike[str], flags: int, *, private: bool = False) -> int:
    """``os.open`` with ``O_CREAT``: an existing file is opened as it is, a new one gets the
    configured mode and group."""
    try:
        return create(path, flags, private=private)
    except FileExistsError:
        return os.open(path, flags)


@contextlib.contextmanager
def create_binary(path: Path, *, private: bool = False) -> Iterator[io.BufferedWriter]:
    """A new file (never an existing one) opened for writing, like ``open(path, "xb")``."""
    fd = create(path, os.O_WRONLY, private=private)
    with os.fdopen(fd, "wb") as out:
        assert isinstance(out, io.BufferedWriter)
        yield out


def write_new(path: Path, data: bytes, *, private: bool = False) -> None:
    """A new file holding ``data``."""
    with create_binary(path, private=private) as out:
        out.write(data)


def make_dirs(path: str | os.PathLike[str], *, private: bool = False) -> None:
    """``mkdir -p``, each level created given the configured folder mode and group (levels
    that existed are left as they are)."""
    target = Path(path)
    missing: list[Path] = []
    level = target
    while not level.exists():
        missing.append(level)
        if level.parent == level:
            break
        level = level.parent
    if not missing:
        return
    target.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        apply(created, private=private)


def apply(path: str | os.PathLike[str], *, private: bool = False) -> None:
    """Give a file or folder made by someone else (a copy, ffmpeg, SQLite) the configured mode
    and group."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        _apply_fd(fd, private=private, directory=stat.S_ISDIR(os.fstat(fd).st_mode))
    finally:
        os.close(fd)
