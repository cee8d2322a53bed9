"""The web front end of ``callrec serve``: uvicorn on the server's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import uvicorn

from callrec import filemodes
from callrec.catalog import ROLE_ADMIN, Catalog
from callrec.config import Settings
from callrec.engine import CatalogWriter, LiveView
from callrec.engine.journalfile import STATE_DIR
from callrec.exceptions import CatalogError, ConfigError
from callrec.health import HealthSource
from callrec.net import new_socket, url_host
from callrec.web.app import create_app
from callrec.web.security import hash_password, new_one_time_password
from callrec.web.tls import CIPHERS, TlsFiles, web_tls

if TYPE_CHECKING:
    from fastapi import FastAPI

    from callrec.usb.importer import Importer

logger = logging.getLogger(__name__)

#: Seconds open responses (audio, live events) get to finish when the server stops.
GRACEFUL_SHUTDOWN = 3
FIRST_ADMIN = "admin"
#: Where a server without a console leaves the first admin's one-time password, under the
#: recordings' state folder.
FIRST_ADMIN_FILE = "first-admin-password"
#: Seconds the start waits for the catalogue to say whether a first admin is needed.
ADMIN_WAIT = 5.0


def check_web_settings(settings: Settings) -> None:
    if not 0 <= settings.web_port <= 65535:
        raise ConfigError(f"web_port must be a port number (0-65535), got {settings.web_port}")
    if settings.web_session_hours <= 0:
        raise ConfigError("web_session_hours must be > 0")
    if settings.web_zip_max_files < 1:
        raise ConfigError("web_zip_max_files must be >= 1")
    if not settings.web_token_max_days >= 0:
        raise ConfigError("web_token_max_days must be >= 0 (0: no maximum)")


def ensure_first_admin(
    catalog: Catalog, *, announce: bool = True, recordings_dir: Path | None = None
) -> str | None:
    """With no user at all, create ``admin`` with a one-time password and hand it to whoever
    starts the server (:func:`announce_first_admin`); returns the password (None when there
    were users)."""
    if catalog.count_users():
        if announce:
            _forget_spent_password(catalog, recordings_dir or Path("recordings"))
        return None
    password = new_one_time_password()
    try:
        catalog.create_user(
            FIRST_ADMIN,
            password_hash=hash_password(password),
            role=ROLE_ADMIN,
            must_change_password=True,
        )
    except CatalogError:
        # Several nodes starting at once on a new catalogue (docs/scaling.md): another
        # one made the first admin, and announced its password on its own machine.
        if catalog.count_users():
            logger.info("another node made the first admin of this catalogue")
            return None
        raise
    if announce:
        announce_first_admin(password, recordings_dir or Path("recordings"))
    return password


def first_admin_password_path(recordings_dir: Path) -> Path:
    return recordings_dir.resolve() / STATE_DIR / FIRST_ADMIN_FILE


def announce_first_admin(password: str, recordings_dir: Path) -> None:
    """Show the one-time password to a person, never to a log: on an interactive console
    it is printed there; otherwise (systemd, docker, a redirected stderr: all end in log
    files) it goes to a file only callrec's user may read, and the log says where."""
    if _interactive(sys.stderr):
        banner = (
            "\n"
            "  callrec web UI: no users existed, so an admin was created.\n"
            f"    user name:          {FIRST_ADMIN}\n"
            f"    one-time password:  {password}\n"
            "  Sign in and choose a new password (or use `callrec user passwd admin`).\n"
        )
        print(banner, file=sys.stderr, flush=True)
        logger.warning(
            "created the first admin user %r; its one-time password is shown on the console",
            FIRST_ADMIN,
        )
        return
    path = first_admin_password_path(recordings_dir)
    try:
        filemodes.make_dirs(path.parent)
        path.unlink(missing_ok=True)  # one of a catalogue made afresh since
        filemodes.write_new(path, f"{FIRST_ADMIN} {password}\n".encode(), private=True)
    except OSError as exc:
        logger.error(
            "created the first admin user %r but cannot write its one-time password to %s "
            "(%s): set one with `callrec user passwd %s`",
            FIRST_ADMIN,
            path,
            exc,
            FIRST_ADMIN,
        )
        return
    logger.warning(
        "created the first admin user %r; its one-time password is in %s (mode 0600): sign "
        "in and choose a new password (the next start then deletes the file)",
        FIRST_ADMIN,
        path,
    )


def _forget_spent_password(catalog: Catalog, recordings_dir: Path) -> None:
    """The file of a one-time password that was replaced since (or whose user is gone) is of
    no use to anyone: it goes, so no secret, even a spent one, lies about."""
    path = first_admin_password_path(recordings_dir)
    if not path.exists():
        return
    admin = catalog.get_user_by_name(FIRST_ADMIN)
    if admin is not None and admin.must_change_password:
        return  # not signed in yet: the file is still how to
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        logger.info("removed %s: the first admin's one-time password was replaced", path)


def _interactive(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


class WebServer:
    """Serves the web UI and REST API on ``web_host:web_port`` inside the running loop."""

    def __init__(
        self,
        settings: Settings,
        *,
        catalog: Catalog,
        writer: CatalogWriter,
        recording: LiveView | None = None,
        importer: Importer | None = None,
        health: HealthSource | None = None,
        job_runs: Callable[[], Mapping[tuple[str, str], int]] | None = None,
        every_node: LiveView | None = None,
    ) -> None:
        check_web_settings(settings)
        self.settings = settings
        #: Checked (or made) here, so that a bad certificate stops `callrec serve` before it
        #: opens any port.
        self.tls: TlsFiles | None = web_tls(settings)
        self.catalog = catalog
        self.writer = writer
        self.app: FastAPI = create_app(
            settings,
            catalog,
            writer=writer,
            recording=recording,
            importer=importer,
            health=health,
            job_runs=job_runs,
            every_node=every_node,
        )
        self._uvicorn: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._admin_task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        assert self._socket is not None
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        host = self.settings.web_host
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else url_host(host)
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://{shown}:{self.port}"

    async def start(self) -> None:
        try:
            await asyncio.wait_for(self.writer.run(self._first_admin), ADMIN_WAIT)
        except (CatalogError, TimeoutError) as exc:
            # The catalogue is down or hung: the web UI still starts (its health page says
            # why), and the first admin is made as soon as the catalogue can take it.
            logger.warning("cannot check the web UI's users yet: %s", exc or "no answer")
            self._admin_task = asyncio.create_task(self._first_admin_later())
        # "::" is dual stack: browsers and scrapers on IPv4 reach it too.
        sock = new_socket(self.settings.web_host, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.settings.web_host, self.settings.web_port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            where = f"{self.settings.web_host}:{self.settings.web_port}"
            raise OSError(exc.errno, f"web UI cannot listen on {where}: {exc.strerror}") from exc
        self._socket = sock
        config = uvicorn.Config(
            self.app,
            log_config=None,  # keep callrec's logging set-up
            access_log=False,
            lifespan="off",
            server_header=False,
            proxy_headers=False,
            # Live listening's PCM barely compresses; deflate would cost CPU per listener.
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
            ssl_certfile=self.tls.cert if self.tls else None,
            ssl_keyfile=self.tls.key if self.tls else None,
            ssl_ciphers=CIPHERS,
        )
        config.load()
        if config.ssl is not None:
            # uvicorn leaves the oldest protocol the ssl module allows.
            config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        server = uvicorn.Server(config)
        # Not server.serve(): that installs its own SIGINT/SIGTERM handlers, and signals
        # belong to `callrec serve`, which stops us in order. These are the steps of its
        # _serve() without them.
        server.lifespan = config.lifespan_class(config)
        try:
            await server.startup(sockets=[sock])
        except BaseException:
            sock.close()
            self._socket = None
            raise
        self._uvicorn = server
        self._task = asyncio.create_task(server.main_loop(), name="callrec-web")
        logger.info(
            "web UI and REST API listening on %s:%d, e.g. %s (API reference at /api/docs)",
            url_host(self.settings.web_host or "0.0.0.0"),
            self.port,
            self.url,
        )

    def _first_admin(self) -> None:
        ensure_first_admin(self.catalog, recordings_dir=self.settings.recordings_dir)

    async def _first_admin_later(self) -> None:
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            try:
                await self.writer.run(self._first_admin)
            except CatalogError:
                delay = min(delay * 2, 30.0)
                continue
            logger.info("the catalogue answers: the web UI's users are checked")
            return

    async def stop(self) -> None:
        if self._admin_task is not None:
            self._admin_task.cancel()
            await asyncio.gather(self._admin_task, return_exceptions=True)
        ctx = self.app.state.ctx
        ctx.live.close()
        ctx.listen.close()
        ctx.metrics.close()
        await ctx.listen.stop()
        if self._uvicorn is None:
            return
        self._uvicorn.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._uvicorn.shutdown(sockets=[self._socket] if self._socket else None)
        self._uvicorn = None
        logger.info("web UI stopped")
