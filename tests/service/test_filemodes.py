"""Recordings, sidecars, journals and the SQLite catalogue get the configured modes and group,
whatever the umask (issue 14 item 5)."""

from __future__ import annotations

import grp
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callrec import filemodes
from callrec.cli import app
from callrec.config import Settings
from callrec.exceptions import ConfigError
from callrec.filemodes import FileModes, dir_mode_for, parse_mode
from callrec.service import Service
from tests.support.data import LOCALFILE_DATA
from tests.support.ffmpeg import needs_ffmpeg
from tests.support.recording import record
from tests.support.rtp import rtp_packets
from tests.support.settings import server_settings

#: Files only callrec's user may read, whatever file_mode says: locks and journals, and the
#: hash chain's signing key (issue 16: its folder 0700 and the key 0600).
PRIVATE_SUFFIXES = (".lock", ".journal", ".callrec/integrity", "signing-key.pem")


@pytest.fixture(autouse=True)
def strict_umask() -> Iterator[None]:
    """A umask that alone would give 0600/0700: the modes must not come from it."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)
        filemodes.configure(FileModes())


def modes_under(root: Path) -> dict[str, int]:
    """Relative path -> permission bits of every file and folder under ``root``."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def expected_mode(name: str, is_dir: bool, file_mode: int) -> int:
    if is_dir:
        return 0o700 if name.endswith(PRIVATE_SUFFIXES) else dir_mode_for(file_mode)
    return 0o600 if name.endswith(PRIVATE_SUFFIXES) else file_mode


def catalogue_modes(tmp_path: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.glob("catalog.db*")}


async def record_one_call(settings: Settings) -> tuple[Service, dict[str, int], dict[str, int]]:
    """A call recorded; the modes under the recordings and of the catalogue's files while
    the server still runs (the journal and SQLite's -wal and -shm go at a clean stop)."""
    server = Service(settings)
    await server.start()
    try:
        await record(server, "PCMA", rtp_packets("PCMA", bytes(range(256)) * 10))
        assert server.catalog.find(limit=5)[0].status == "complete"
        running = modes_under(server.root)
        catalogue = catalogue_modes(settings.recordings_dir.parent)
    finally:
        await server.stop()
    return server, running, catalogue


@pytest.mark.parametrize("file_mode", ["0640", "0660", "0600"])
async def test_a_recorded_call_leaves_only_files_of_the_configured_mode(
    tmp_path: Path, file_mode: str
) -> None:
    settings = server_settings(tmp_path, file_mode=file_mode)
    server, running, catalogue = await record_one_call(settings)
    mode = parse_mode(file_mode)
    assert stat.S_IMODE(server.root.stat().st_mode) == dir_mode_for(mode)
    # The recording, its sidecar, the date folder, the journal: all there, all as configured.
    for found in (running, modes_under(server.root)):
        assert any(name.endswith(".wav") for name in found)
        assert any(name.endswith(".wav.json") for name in found)
        wrong = {
            name: f"{got:04o}"
            for name, got in found.items()
            if got != expected_mode(name, (server.root / name).is_dir(), mode)
        }
        assert wrong == {}
    assert any(name.endswith(".journal") for name in running)
    # The catalogue and the side files SQLite made beside it.
    assert {"catalog.db", "catalog.db-wal", "catalog.db-shm"} <= set(catalogue)
    assert {k: f"{v:04o}" for k, v in catalogue.items()} == {k: f"{mode:04o}" for k in catalogue}
    assert catalogue_modes(tmp_path) == {"catalog.db": mode}


def other_usable_group() -> int:
    """A group the test process may give files to, other than its own when it can."""
    own = os.getegid()
    candidates = [g for g in os.getgroups() if g != own]
    if not candidates and os.geteuid() == 0:
        candidates = [g.gr_gid for g in grp.getgrall() if g.gr_gid != own]
    return candidates[0] if candidates else own


async def test_file_group_is_given_to_every_file_and_folder(tmp_path: Path) -> None:
    gid = other_usable_group()
    name = grp.getgrgid(gid).gr_name
    server, _, _ = await record_one_call(server_settings(tmp_path, file_group=name))
    paths = [server.root, *server.root.rglob("*")]
    assert len(paths) > 4
    groups = {str(p.relative_to(server.root)): p.lstat().st_gid for p in paths}
    private = {k for k in groups if k.endswith(PRIVATE_SUFFIXES)}
    assert {k: g for k, g in groups.items() if k not in private and g != gid} == {}
    assert (tmp_path / "catalog.db").stat().st_gid == gid


def test_file_mode_and_group_settings_are_checked() -> None:
    assert parse_mode("0640") == 0o640 and parse_mode("750") == 0o750
    assert dir_mode_for(0o640) == 0o750 and dir_mode_for(0o600) == 0o700
    assert dir_mode_for(0o644) == 0o755 and dir_mode_for(0o660) == 0o770
    for bad, message in (
        ("rw-r-----", "must be octal"),
        ("01640", "at most 0777"),
        ("0440", "read and write its files"),
        ("0666", "must not let every local user write"),
    ):
        with pytest.raises(ConfigError, match=message):
            Settings(file_mode=bad)
    with pytest.raises(ConfigError, match="'no-such-group-xyz': no such group"):
        FileModes.from_settings("0640", "no-such-group-xyz")
    with pytest.raises(ConfigError, match="no such group"):
        Service(Settings(file_group="no-such-group-xyz"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody")
def test_a_group_the_process_is_not_in_is_refused() -> None:
    # A child that drops to nobody (no supplementary groups) asks for root's group.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                filemodes.resolve_group("0")
                message = "accepted"
            except ConfigError as exc:
                message = str(exc)
            os.write(write, message.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    assert message == (
        "file_group '0': this process (uid 65534) is not a member of group 0, so it may not "
        "give files to it"
    )


async def test_exports_get_the_configured_mode(tmp_path: Path) -> None:
    settings = server_settings(tmp_path)
    await record_one_call(settings)
    out = tmp_path / "export" / "calls"
    env = {
        "CALLREC_RECORDINGS_DIR": str(settings.recordings_dir),
        "CALLREC_DATABASE_URL": settings.database_url,
        "CALLREC_FILE_MODE": "0660",
    }
    result = CliRunner().invoke(app, ["recordings", "export", "--to", str(out)], env=env)
    assert result.exit_code == 0, result.output
    found = modes_under(tmp_path / "export")
    assert any(name.endswith(".wav") for name in found) and "calls/index.csv" in found
    assert {n: f"{m:04o}" for n, m in found.items()} == {
        n: "0770" if (tmp_path / "export" / n).is_dir() else "0660" for n in found
    }


@needs_ffmpeg
@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_converted_files_get_the_configured_mode(tmp_path: Path, fmt: str) -> None:
    # FFmpeg writes the FLAC under the umask (0600 here); callrec gives it the mode after.
    out = tmp_path / "converted" / "day"
    source = str(LOCALFILE_DATA / "pcma-rtp.wav")
    result = CliRunner().invoke(app, ["file", "convert", source, "-o", str(out), "-f", fmt])
    assert result.exit_code == 0, result.output
    found = modes_under(tmp_path / "converted")
    assert {n: f"{m:04o}" for n, m in found.items()} == {
        "day": "0750",
        f"day/pcma-rtp.{fmt}": "0640",
    }
