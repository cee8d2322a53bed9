"""Record first: the SQLite catalogue lost, read-only or on a full disk, and calls go on.

Real servers on loopback, real simulated phones, real SQLite files; the faults are real ones
(the database's directory removed, its filesystem remounted read-only or filled). Every call
is answered ``success`` and its audio is on disk whatever the catalogue does; once it is back
(or rebuilt from the sidecars) every row is final, once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from callrec.catalog import Catalog, RecordingInfo
from callrec.cli import app
from callrec.service import Service
from callrec.sim.phone import PhoneCall
from tests.support.rtp import rtp_packets
from tests.support.settings import server_settings
from tests.support.waiting import wait_catalogued, wait_for, wait_idle, wait_received

#: 1 s of PCMA per call.
PACKETS = rtp_packets("PCMA", bytes(range(256)) * 31 + bytes(64))


async def record_call(server: Service, sid: str) -> None:
    """One whole call: start answered success, 1 s of audio received, stop answered success."""
    call = PhoneCall("127.0.0.1", server.control_port, session_id=sid, codec="PCMA")
    try:
        assert (await call.start())["result"] == "success"
        await call.send_packets(PACKETS, realtime=False)
        await wait_received(server, sid, len(PACKETS))
        assert (await call.stop())["result"] == "success"
    finally:
        await call.close()


def rows_of(catalog: Catalog) -> dict[str, RecordingInfo]:
    rows = catalog.find(limit=10_000)
    by_session = {r.session_id: r for r in rows}
    assert len(by_session) == len(rows), "duplicate rows"
    return by_session


def frames(root: Path, row: RecordingInfo) -> int:
    with wave.open(str(root / row.path), "rb") as w:
        return w.getnframes()


def mount_tmpfs(path: Path, size: int) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for path in reversed(made):
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_the_catalogue_is_rebuilt_from_the_sidecars(tmp_path: Path) -> None:
    settings = server_settings(tmp_path)
    server = Service(settings)
    await server.start()
    try:
        for n in range(3):
            await record_call(server, f"r{n}")
        await wait_idle(server)
        before = rows_of(server.catalog)
    finally:
        await server.stop()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp_path / 'catalog.db'}{suffix}").unlink(missing_ok=True)
    env = {
        "CALLREC_DATABASE_URL": settings.database_url,
        "CALLREC_RECORDINGS_DIR": str(settings.recordings_dir),
    }
    result = CliRunner().invoke(app, ["catalogue", "rebuild", "--json"], env=env)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.output)
    assert (report["sidecars"], report["added"], report["without_sidecar"]) == (3, 3, [])
    with Catalog(settings.database_url) as catalog:
        after = rows_of(catalog)
    ignored = {"id", "created_at", "updated_at"}
    for sid, row in before.items():
        old = {k: v for k, v in dataclasses.asdict(row).items() if k not in ignored}
        new = {k: v for k, v in dataclasses.asdict(after[sid]).items() if k not in ignored}
        assert new == old
    # Again: nothing to add.
    result = CliRunner().invoke(app, ["catalogue", "rebuild", "--json"], env=env)
    assert json.loads(result.output)["added"] == 0


async def test_sqlite_removed_mid_run_records_on_and_a_restart_rebuilds(tmp_path: Path) -> None:
    db_dir = tmp_path / "db"
    settings = server_settings(tmp_path, database_url=f"sqlite:///{db_dir / 'catalog.db'}")
    root = settings.recordings_dir.resolve()
    server = Service(settings)
    await server.start()
    try:
        await record_call(server, "before")
        await wait_idle(server)
        live = PhoneCall("127.0.0.1", server.control_port, session_id="live", codec="PCMA")
        assert (await live.start())["result"] == "success"
        shutil.rmtree(db_dir)  # an operator's mistake, a cleaning script
        for n in range(3):
            await record_call(server, f"after{n}")
        await live.send_packets(PACKETS, realtime=False)
        await wait_received(server, "live", len(PACKETS))
        assert (await live.stop())["result"] == "success"
        await live.close()
        await wait_idle(server, catalogued=False)
        # The rows wait in the journal: the catalogue's file is gone, it is not written.
        await wait_for(lambda: server.journal.status().failures > 0, what="a failed write")
        assert server.journal.status().backlog > 0
    finally:
        await server.stop()
    # Restarted: a new, empty catalogue is rebuilt from the sidecars, then the journal that
    # the first server left is replayed on top.
    server = Service(settings)
    await server.start()
    try:
        await wait_catalogued(server)
        rows = rows_of(server.catalog)
    finally:
        await server.stop()
    assert set(rows) == {"before", "live", "after0", "after1", "after2"}
    for row in rows.values():
        assert (row.status, row.stop_reason) == ("complete", "phone_stop"), row
        assert frames(root, row) == 8000 and row.duration == 1.0


async def test_a_read_only_catalogue_catches_up(tmp_path: Path, mounts: list[Path]) -> None:
    db_dir = tmp_path / "db"
    mount_tmpfs(db_dir, 16 << 20)
    mounts.append(db_dir)
    settings = server_settings(tmp_path, database_url=f"sqlite:///{db_dir / 'catalog.db'}")
    with Catalog(settings.database_url) as catalog:
        catalog.migrate()
    # Read-only when the server starts (a restored backup, a wrong mount option).
    subprocess.run(["mount", "-o", "remount,ro", str(db_dir)], check=True)
    server = Service(settings)
    await server.start()
    try:
        for n in range(3):
            await record_call(server, f"ro{n}")
        await wait_idle(server, catalogued=False)
        await wait_for(lambda: server.journal.status().failures > 0, what="a failed write")
        assert server.journal.status().backlog > 0
        subprocess.run(["mount", "-o", "remount,rw", str(db_dir)], check=True)
        await wait_catalogued(server, timeout=60)
        rows = rows_of(server.catalog)
    finally:
        await server.stop()
    assert set(rows) == {"ro0", "ro1", "ro2"}
    assert {(r.status, r.stop_reason) for r in rows.values()} == {("complete", "phone_stop")}


async def test_a_full_disk_shared_with_sqlite_leaves_no_row_recording(
    tmp_path: Path, mounts: list[Path]
) -> None:
    small = tmp_path / "small"
    mount_tmpfs(small, 2 << 20)
    mounts.append(small)
    settings = server_settings(
        tmp_path,
        recordings_dir=small / "recordings",
        database_url=f"sqlite:///{small / 'catalog.db'}",
        disk_reserve_bytes=0,
        disk_reserve_percent=0,
    )
    server = Service(settings)
    await server.start()
    try:
        await record_call(server, "before")
        await wait_idle(server)
        filler = small / "filler"
        # Every byte left, catalogue and recordings alike.
        with filler.open("wb") as out, contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        calls = [
            PhoneCall("127.0.0.1", server.control_port, session_id=f"full{n}", codec="PCMA")
            for n in range(2)
        ]
        for call in calls:
            # Success (and then cut short), or failed disk_full: either leaves a row.
            if (await call.start())["result"] == "success":
                await call.send_packets(PACKETS, realtime=False)
                await call.stop()
            await call.close()
        await wait_idle(server, catalogued=False)
        filler.unlink()  # space returns
        await wait_idle(server, timeout=60)
        rows = rows_of(server.catalog)
    finally:
        await server.stop()
    # Whatever each call could get (refused disk_full, or cut short), no row stays open.
    assert rows["before"].status == "complete"
    assert {"full0", "full1"} <= set(rows)
    assert all(r.status != "recording" for r in rows.values()), rows
