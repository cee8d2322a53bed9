"""The locks and the hand-over rule of callrec.service.supervision, in this process: each lock
taken through a descriptor of its own conflicts as it would between processes (``flock``
locks belong to an open file, not to a process)."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
from pathlib import Path

import pytest

from callrec.catalog import Catalog
from callrec.service import Service, supervision
from callrec.service.supervision import (
    MainLockHeld,
    Succession,
    control_listeners,
    main_lock,
    main_lock_path,
    main_running,
)
from callrec.sim.phone import PhoneCall
from tests.support.data import encoded
from tests.support.net import free_tcp_port
from tests.support.rtp import rtp_packets
from tests.support.serve import START_SECONDS, spawn_serve
from tests.support.settings import server_settings


def _listener(port: int = 0) -> socket.socket:
    """A socket listening on loopback with SO_REUSEPORT, as every callrec process has."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_the_main_lock_is_held_while_the_server_runs_and_says_by_whom(tmp_path: Path) -> None:
    settings = server_settings(tmp_path, control_port=10123)
    assert not main_running(settings.recordings_dir)
    with main_lock(settings):
        assert main_running(settings.recordings_dir)
        holder = json.loads(main_lock_path(settings.recordings_dir).read_text())
        assert holder == {"pid": os.getpid(), "control_host": "127.0.0.1", "control_port": 10123}
    assert not main_running(settings.recordings_dir)
    assert main_lock_path(settings.recordings_dir).exists()  # kept: removing it would race


def test_a_second_server_on_the_same_recordings_is_refused(tmp_path: Path) -> None:
    settings = server_settings(tmp_path)
    with main_lock(settings):
        with pytest.raises(MainLockHeld, match=f"pid {os.getpid()}"), main_lock(settings):
            pass
        assert main_running(settings.recordings_dir)


def test_an_orphans_look_at_the_lock_does_not_refuse_a_starting_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = server_settings(tmp_path)
    path = main_lock_path(settings.recordings_dir)
    path.parent.mkdir(parents=True)
    path.touch()
    # An orphan's probe (a shared lock) holds the file when the server first tries; it has let
    # go by the server's next try.
    probe = os.open(path, os.O_RDONLY)
    fcntl.flock(probe, fcntl.LOCK_SH)
    sleeps: list[float] = []

    def let_go(seconds: float) -> None:
        sleeps.append(seconds)
        os.close(probe)

    monkeypatch.setattr(supervision.time, "sleep", let_go)
    with main_lock(settings):
        assert main_running(settings.recordings_dir)
    assert len(sleeps) == 1


def test_a_full_disk_does_not_stop_the_server_for_want_of_its_lock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(supervision.os, "open", full)
    with caplog.at_level(logging.WARNING), main_lock(server_settings(tmp_path)):
        pass
    assert "orphaned workers will not hand over" in caplog.text


def test_a_lock_file_that_cannot_be_made_otherwise_stops_the_server(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    settings = server_settings(tmp_path, recordings_dir=tmp_path / "file" / "recordings")
    with pytest.raises(OSError), main_lock(settings):
        pass


def test_control_listeners_are_the_sockets_on_the_same_address_and_port() -> None:
    first = _listener()
    port = first.getsockname()[1]
    second, elsewhere = _listener(port), _listener()
    try:
        inodes = {os.fstat(s.fileno()).st_ino for s in (first, second)}
        assert control_listeners(first) == inodes == control_listeners(second)
        assert control_listeners(elsewhere) == {os.fstat(elsewhere.fileno()).st_ino}
    finally:
        for sock in (first, second, elsewhere):
            sock.close()


def test_an_orphan_hands_over_once_a_new_server_holds_the_lock_and_listens(
    tmp_path: Path,
) -> None:
    orphan = _listener()
    port = orphan.getsockname()[1]
    settings = server_settings(tmp_path, control_port=port)
    succession = Succession(settings, orphan)
    new: socket.socket | None = None
    try:
        assert not succession.taken_over()  # nobody else yet
        with main_lock(settings):
            # A new server starting (migration, recovery): the orphan serves on meanwhile.
            assert not succession.taken_over()
            new = _listener(port)
            assert succession.taken_over()
        # The new server gone again before the orphan looked: nobody to hand over to.
        assert not succession.taken_over()
    finally:
        orphan.close()
        if new is not None:
            new.close()


@pytest.mark.parametrize("change", [{"control_port": 1}, {"control_host": "127.0.0.2"}])
def test_an_orphan_hands_over_at_once_to_a_server_on_another_address(
    tmp_path: Path, change: dict[str, object]
) -> None:
    orphan = _listener()
    settings = server_settings(tmp_path, control_port=orphan.getsockname()[1])
    try:
        succession = Succession(settings, orphan)
        with main_lock(
            server_settings(tmp_path, **{"control_port": settings.control_port, **change})
        ):
            assert succession.taken_over()
    finally:
        orphan.close()


async def test_a_front_end_that_stops_listening_ends_its_calls_as_they_end(
    tmp_path: Path,
) -> None:
    server = Service(server_settings(tmp_path))
    await server.start()
    try:
        port = server.control_port
        call = PhoneCall("127.0.0.1", port, session_id="s1", codec="PCMA")
        assert (await call.start())["result"] == "success"
        server.phone.stop_listening()
        assert server.phone.control_socket is None
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        packets = rtp_packets("PCMA", encoded("PCMA"))
        await call.send_packets(packets, realtime=False)
        assert (await call.stop())["result"] == "success"
        await call.close()
    finally:
        await server.stop()
    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        (rec,) = catalog.find()
    assert (rec.status, rec.stop_reason, rec.packets_received) == ("complete", "phone_stop", 100)


def test_callrec_serve_refuses_to_start_beside_a_server_on_the_same_recordings(
    tmp_path: Path,
) -> None:
    log = tmp_path / "second.log"
    with main_lock(server_settings(tmp_path)):
        proc = spawn_serve(tmp_path, log=log, control_port=free_tcp_port())
        try:
            assert proc.wait(START_SECONDS) == 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert f"another callrec serve (pid {os.getpid()})" in log.read_text()
