"""The web server inside `callrec serve`: first start, configuration, shutdown."""

from __future__ import annotations

import os
import pty
import stat
import sys
from pathlib import Path

import httpx
import pytest

from callrec.catalog import Catalog
from callrec.config import Settings
from callrec.exceptions import ConfigError
from callrec.service import Service
from callrec.web import WebServer
from callrec.web.server import check_web_settings, ensure_first_admin, first_admin_password_path
from tests.support.settings import server_settings
from tests.support.web import start_site, stop_site


async def test_first_start_without_a_console_leaves_the_password_in_a_private_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # Under pytest stderr is no terminal: as under systemd or docker, it ends in a log.
    site = await start_site(tmp_path, users=False)
    try:
        path = first_admin_password_path(site.server.settings.recordings_dir)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        user, password = path.read_text().split()
        assert user == "admin" and len(password) >= 12
        assert password not in capsys.readouterr().err
        assert password not in caplog.text and str(path) in caplog.text
        admin = site.catalog.get_user_by_name("admin")
        assert admin is not None and admin.is_admin and admin.must_change_password
        async with httpx.AsyncClient(base_url=site.base) as client:
            form = await client.get("/login")
            csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            r = await client.post(
                "/login", data={"username": "admin", "password": password, "csrf": csrf}
            )
            assert r.status_code == 303 and r.headers["location"] == "/account"
            # Until a new password is chosen, every page leads back to the account page.
            r = await client.get("/recordings")
            assert r.status_code == 303 and r.headers["location"] == "/account"
            # The API says who is asking, and refuses everything else, saying why.
            assert (await client.get("/api/v1/me")).json()["must_change_password"] is True
            r = await client.get("/api/v1/recordings")
            assert r.status_code == 403 and "one-time password" in r.json()["detail"]
    finally:
        await stop_site(site)
    # A second start with a user in the catalogue creates nobody; the file stays while the
    # one-time password is still to be replaced, and goes once it has been.
    for replaced in (False, True):
        again = await start_site(tmp_path, users=False)
        try:
            assert "one-time password" not in capsys.readouterr().err
            assert [u.username for u in again.catalog.list_users()] == ["admin"]
            assert path.exists() is not replaced
            admin = again.catalog.get_user_by_name("admin")
            assert admin is not None
            again.catalog.update_user(admin.id, must_change_password=False)
        finally:
            await stop_site(again)


def test_on_a_terminal_the_password_is_printed_there_and_not_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    main, child = pty.openpty()
    with os.fdopen(child, "w", encoding="utf-8") as terminal, os.fdopen(main, "rb", 0) as screen:
        monkeypatch.setattr(sys, "stderr", terminal)
        catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
        try:
            catalog.migrate()
            password = ensure_first_admin(catalog, recordings_dir=tmp_path / "recordings")
        finally:
            catalog.close()
        monkeypatch.undo()
        shown = b""
        for _ in range(50):  # the banner is a few hundred bytes, already in the terminal
            shown += screen.read(4096)
            if b"Sign in" in shown:
                break
    assert password is not None and f"one-time password:  {password}" in shown.decode()
    assert password not in caplog.text and "shown on the console" in caplog.text
    assert not first_admin_password_path(tmp_path / "recordings").exists()


async def test_stop_ends_open_event_streams(tmp_path: Path) -> None:
    site = await start_site(tmp_path)
    async with (
        site.client("admin") as client,
        client.stream("GET", "/api/v1/live/events") as stream,
    ):
        lines = stream.aiter_lines()
        assert await anext(lines) == "retry: 2000"
        await site.web.stop()  # returns although the stream is open
        rest = [line async for line in lines]
    assert all(not line.startswith("data: [{") for line in rest)
    await site.server.stop()


def test_the_web_server_follows_the_settings(tmp_path: Path) -> None:
    on = Service(server_settings(tmp_path, web_enabled=True, web_port=0, web_host="127.0.0.1"))
    off = Service(server_settings(tmp_path, web_enabled=False))
    try:
        assert isinstance(on.web, WebServer)
        assert off.web is None
    finally:
        on.catalog.close()
        off.catalog.close()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"web_port": 70000}, "web_port must be a port number"),
        ({"web_session_hours": 0.0}, "web_session_hours must be > 0"),
        ({"web_zip_max_files": 0}, "web_zip_max_files must be >= 1"),
    ],
)
def test_bad_web_settings(overrides: dict[str, object], message: str) -> None:
    settings = Settings(**overrides)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        check_web_settings(settings)


async def test_metrics_can_require_an_admin(tmp_path: Path) -> None:
    site = await start_site(tmp_path, web_metrics_public=False)
    try:
        async with site.client() as anonymous:
            assert (await anonymous.get("/metrics")).status_code == 401
        async with site.client("listener") as listener:
            assert (await listener.get("/metrics")).status_code == 403
        async with site.client("admin") as admin:
            r = await admin.get("/metrics")
            assert r.status_code == 200 and "callrec_sessions_active 0.0" in r.text
    finally:
        await stop_site(site)


async def test_a_busy_web_port_is_reported(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        settings = server_settings(tmp_path, web_enabled=True, web_host="127.0.0.1", web_port=port)
        server = Service(settings)
        try:
            with pytest.raises(OSError, match=f"web UI cannot listen on 127.0.0.1:{port}"):
                await server.start()
        finally:
            await server.stop()
