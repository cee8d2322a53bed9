"""The composition root: builds everything ``callrec serve`` runs and owns its order.

One place knows how the parts fit together; each part is given what it needs as arguments:

* the catalogue (reads) and the :class:`~callrec.engine.CatalogWriter` (the one thread that
  writes it), the media port range, the :class:`~callrec.engine.LiveRegistry` and the
  :class:`~callrec.engine.RecordingEngine` over them;
* the front ends: the phone control listener (:mod:`callrec.server`), SIP (:mod:`callrec.sip`),
  the web UI (:mod:`callrec.web`, given the live *view*, the writer and the USB importer);
* with ``--workers N``, the pool of media worker processes, each running a :class:`Service`
  of its own with only the phone front end (:mod:`callrec.service.workers`).

Start order: the catalogue is migrated and what a crash left open is recovered, then the
engine ticks, the workers start, and the front ends open their ports (phone control last
among the recording ones, so a phone never meets half a server). Stop order is the reverse:
front ends first (no new work; SIP hangs up and the phone listener finishes its sessions),
then the workers, then the engine (whatever is still open ends ``shutdown``), then the writer
(its queued writes done, the catalogue closed). Signals belong to :func:`serve_forever`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from callrec import filemodes
from callrec.catalog import Catalog
from callrec.config import Settings
from callrec.engine import (
    Admission,
    CatalogWriter,
    LiveRegistry,
    LiveSession,
    PortRange,
    RecordingEngine,
)
from callrec.engine.catchup import catch_up
from callrec.engine.journal import OK, Journal
from callrec.engine.journalfile import journal_dir
from callrec.engine.portmemory import PortMemory, ports_dir
from callrec.filemodes import FileModes
from callrec.health import ProcessHealth, worker_report
from callrec.retention.task import RetentionTask
from callrec.server.listener import PhoneServer
from callrec.service.process import prepare_process, run_loop
from callrec.service.supervision import state_dir
from callrec.service.workers import (
    PROGRESS_SECONDS,
    WorkerPool,
    call_soon,
    slice_settings,
)
from callrec.usb.importer import Importer

if TYPE_CHECKING:
    from callrec.sip.server import SipServer
    from callrec.web.server import WebServer

logger = logging.getLogger(__name__)

#: Seconds a start waits for the catalogue to be migrated and recovered before it records.
CATALOGUE_START_WAIT = 5.0
#: Seconds a stop waits for the journal to catalogue the last recordings' ends.
CATALOGUE_STOP_WAIT = 10.0


@dataclass(frozen=True, slots=True)
class Held:
    """What a :class:`Service` holds at one moment (for soak tests and operators)."""

    ports: int
    recordings: int
    connections: int


def build_engine(settings: Settings, journal: Journal, live: LiveRegistry) -> RecordingEngine:
    """The recording engine of a process, with the settings' limits."""
    root = settings.recordings_dir.resolve()
    return RecordingEngine(
        root=root,
        journal=journal,
        live=live,
        admission=Admission(
            root,
            max_sessions=settings.max_sessions,
            max_sessions_per_device=settings.max_sessions_per_device,
            disk_reserve_bytes=settings.disk_reserve_bytes,
            disk_reserve_percent=settings.disk_reserve_percent,
        ),
        filename_template=settings.filename_template,
        sync_interval=settings.sync_interval,
        max_duration=settings.max_duration,
        sync_mode=settings.sync_mode,
    )


class Service:
    """Everything one ``callrec serve`` process runs, built from its settings.

    ``worker`` is True in a media worker process: it records its share of the phones' calls
    and nothing else (the main process migrates, recovers, serves SIP and the web)."""

    def __init__(self, settings: Settings, *, worker: bool = False) -> None:
        self.settings = settings
        self.worker = worker
        pooled = settings.workers > 1 and not worker
        # The main process of a pool records on the first slice of the media ports.
        own = slice_settings(settings, 0) if pooled else settings
        self.root = settings.recordings_dir.resolve()
        # Before anything makes a file (the catalogue's, below): a ConfigError for a group
        # this process may not use stops the start here.
        filemodes.configure(FileModes.from_settings(settings.file_mode, settings.file_group))
        # Not connected here: the server records while its catalogue is unreachable.
        self.catalog = Catalog(settings.database_url, check=False)
        self.writer = CatalogWriter(self.catalog)
        self.journal = Journal(
            journal_dir(self.root), self.writer, name="worker" if worker else "main"
        )
        self.ports = PortRange(
            own.media_host,
            own.media_port_min,
            own.media_port_max,
            memory=PortMemory(ports_dir(state_dir(self.root)), settings.media_port_quarantine),
            rcvbuf=own.media_rcvbuf,
        )
        self.live = LiveRegistry()
        self.engine = build_engine(settings, self.journal, self.live)
        self.phone = PhoneServer(own, engine=self.engine, ports=self.ports)
        self.importer = Importer(
            self.engine,
            self.catalog,
            import_dir=settings.usb_import_dir,
            max_bytes=settings.usb_import_max_bytes,
        )
        # The front ends a process does not run are not even imported: the web stack (FastAPI,
        # pydantic, uvicorn) alone costs a media worker about 20 MiB.
        self.sip: SipServer | None = None
        if own.sip_enabled:
            from callrec.sip.server import SipServer

            self.sip = SipServer(own, engine=self.engine, ports=self.ports, catalog=self.catalog)
        # Retention and the disk quota (issue 16 R): the main process sweeps, its workers not.
        self.retention: RetentionTask | None = None
        if not worker:
            self.retention = RetentionTask(self.catalog, settings)
        self.web: WebServer | None = None
        if own.web_enabled:
            from callrec.web.server import WebServer

            self.web = WebServer(
                own,
                catalog=self.catalog,
                writer=self.writer,
                recording=self.live,
                importer=self.importer,
                health=ProcessHealth(
                    self.journal,
                    self.engine.admission,
                    lambda: self.workers,
                    quota=lambda: self.retention.quota if self.retention else None,
                ),
            )
        self.workers: WorkerPool | None = None
        self._started: list[Any] = []
        self._stopped = False
        self._background: list[asyncio.Task[None]] = []

    @property
    def control_port(self) -> int:
        """The phones' TCP control port."""
        return self.phone.control_port

    def held(self) -> Held:
        """What this process holds now: media ports, open recordings, control connections."""
        return Held(
            ports=self.ports.in_use,
            recordings=len(self.engine.recordings),
            connections=self.phone.connections,
        )

    async def start(self, *, stop: asyncio.Event | None = None) -> None:
        """Recover, start the engine, the workers and the front ends; stops early (leaving
        what started to :meth:`stop`) once ``stop`` is set."""
        filemodes.make_dirs(self.root)
        _warn_if_open(self.root)
        self.journal.open()
        self.ports.memory.open()
        settled = asyncio.Event()
        self._background = [
            asyncio.create_task(self.journal.run(), name="callrec-journal"),
            asyncio.create_task(
                catch_up(self.journal, self.root, main=not self.worker, settled=settled),
                name="callrec-catch-up",
            ),
        ]
        # A healthy catalogue is migrated and recovered before the first call; one that is
        # down or hung only delays the start by this much, then catches up in the background.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(settled.wait(), CATALOGUE_START_WAIT)
        await self.engine.start()
        if self.retention is not None:
            self._background.append(
                asyncio.create_task(self.retention.run(), name="callrec-retention")
            )
        if self.settings.workers > 1 and not self.worker:
            port = self.phone.reserve_control_port()
            self.workers = WorkerPool(
                dataclasses.replace(self.settings, control_port=port),
                live=self.live,
                journal=self.journal,
                root=self.root,
                target=worker_main,
            )
            self._started.append(self.workers)
            await self.workers.start()
        self._started.append(self.phone)  # its stop also closes a port reserved, not opened
        await self.phone.listen()
        if self.sip is not None and not (stop and stop.is_set()):
            try:
                await self.sip.start()
                self._started.append(self.sip)
            except OSError as exc:
                # Recording phones is the primary job: it goes on without SIP.
                logger.error(
                    "SIP disabled: cannot listen on %s port %d: %s",
                    self.settings.sip_host,
                    self.settings.sip_port,
                    exc,
                )
        if self.web is not None and not (stop and stop.is_set()):
            await self.web.start()
            self._started.append(self.web)

    async def stop(self) -> None:
        """Front ends first, then the workers, the engine and the catalogue writer."""
        if self._stopped:
            return
        self._stopped = True
        for part in (self.web, self.sip, self.phone, self.workers):
            if part is not None and part in self._started:
                try:
                    await part.stop()
                except Exception:
                    logger.exception("error stopping %s", type(part).__name__)
        await self.engine.stop()
        if self.retention is not None:
            self.retention.stop()
        self.ports.memory.close()
        await self._stop_catalogue(self.journal, self._background)
        self.catalog.close()
        logger.info("recording server stopped")

    @staticmethod
    async def _stop_catalogue(journal: Journal, background: list[asyncio.Task[None]]) -> None:
        """Give the journal a moment to catalogue the last ends, then stop it; what it could
        not apply stays in its file for the next start."""
        deadline = asyncio.get_running_loop().time() + CATALOGUE_STOP_WAIT
        while not journal.applied.is_set() and journal.status().state == OK:
            if asyncio.get_running_loop().time() > deadline:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(journal.applied.wait(), 0.1)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if journal.status().state != OK:
            journal.writer.catalog.interrupt()  # a call stuck on a hung database ends now
        left = journal.status().backlog
        if left:
            logger.warning("%d catalogue writes left in %s for the next start", left, journal.path)
        journal.close()
        await journal.writer.close()


def _warn_if_open(root: Path) -> None:
    """Folders made by an older callrec (or by hand) keep their modes: say so when every local
    user can read the calls."""
    with contextlib.suppress(OSError):
        mode = root.stat().st_mode & 0o777
        if mode & 0o005:
            logger.warning(
                "recordings_dir %s has mode %04o: every local user can read the calls "
                "(chmod -R o-rwx %s; docs/deployment.md)",
                root,
                mode,
                root,
            )


async def serve_forever(settings: Settings) -> None:
    """Run a :class:`Service` until SIGTERM/SIGINT, then shut it down gracefully."""
    # Signals first: a SIGTERM that arrives during start-up still shuts down gracefully.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = Service(settings)
    try:
        await service.start(stop=stop)
        started = time.monotonic()
        await stop.wait()
        logger.info("shutting down after %.0f s", time.monotonic() - started)
    finally:
        await service.stop()


def run(settings: Settings) -> None:
    """``callrec serve``: this process records, until a signal ends it."""
    prepare_process()
    run_loop(serve_forever(settings))


@asynccontextmanager
async def standalone_engine(
    settings: Settings, catalog: Catalog, *, name: str
) -> AsyncIterator[RecordingEngine]:
    """A recording engine with a journal of its own over ``catalog`` (migrated here), and no
    front ends: ``callrec file import`` and the tests. At the end the engine is stopped and
    the journal applied (or left for the next start)."""
    writer = CatalogWriter(catalog)
    root = settings.recordings_dir.resolve()
    journal = Journal(journal_dir(root), writer, name=name)
    background: list[asyncio.Task[None]] = []
    try:
        await writer.run(catalog.migrate)
        journal.open()
        journal.ready.set()
        background.append(asyncio.create_task(journal.run(), name="callrec-journal"))
        engine = build_engine(settings, journal, LiveRegistry())
        await engine.start()
        try:
            yield engine
        finally:
            await engine.stop()
    finally:
        await Service._stop_catalogue(journal, background)


@asynccontextmanager
async def importing(settings: Settings) -> AsyncIterator[Importer]:
    """An importer of phone-local files with a recording engine of its own and no front
    ends (``callrec file import``): the catalogue migrated, the writer closed at the end."""
    with Catalog(settings.database_url) as catalog:
        async with standalone_engine(settings, catalog, name="import") as engine:
            yield Importer(
                engine,
                catalog,
                import_dir=settings.usb_import_dir,
                max_bytes=settings.usb_import_max_bytes,
            )


# -- a media worker process (see callrec.service.workers) ------------------------------------


def worker_main(settings: Settings, index: int, conn: Connection) -> None:
    """Entry point of media worker ``index`` (a spawned process). It outlives its main
    process if that dies, until a new one takes over (callrec.service.supervision)."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [worker {index}] %(name)s: %(message)s",
    )
    prepare_process()
    # Ctrl-C in a terminal reaches the whole process group: the main process decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    run_loop(_serve_worker(slice_settings(settings, index), conn))


async def _serve_worker(settings: Settings, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    #: Set when the main process has gone (its pipe closed): see callrec.service.supervision.
    orphaned = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    service = Service(settings, worker=True)
    live = service.live

    def send(message: tuple[Any, ...]) -> None:
        if orphaned.is_set():
            return
        try:
            conn.send(message)  # small; the main process's pipe thread reads at once
        except (OSError, ValueError):
            orphaned.set()  # the main process is gone; its watcher says so too

    def watch_pipe() -> None:
        # Thread: the main process never writes, so recv() returns only when it has gone.
        with contextlib.suppress(EOFError, OSError):
            conn.recv()
        call_soon(loop, orphaned.set)

    def progress(sessions: list[LiveSession]) -> tuple[Any, ...]:
        report = worker_report(service.journal, service.engine.admission)
        return ("progress", live.local_total, sessions, report)

    live.add_observer(lambda event, snapshot: send((event, snapshot)))
    threading.Thread(target=watch_pipe, name="callrec-main-watch", daemon=True).start()
    try:
        await service.start()
        send(("ready",))
        while not stop.is_set() and not orphaned.is_set():
            if not await _wait_any((stop, orphaned), PROGRESS_SECONDS):
                send(progress(live.local_sessions()))
        if orphaned.is_set() and not stop.is_set():
            await _serve_orphaned(service, stop)
    finally:
        await service.stop()
        send(progress([]))
        conn.close()


async def _wait_any(events: tuple[asyncio.Event, ...], timeout: float) -> bool:
    """Wait until one of ``events`` is set or ``timeout`` passes; whether one is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return any(event.is_set() for event in events)


async def _serve_orphaned(service: Service, stop: asyncio.Event) -> None:
    """A worker whose main process died: keep taking and recording calls until a new main
    process serves the control port, then take no new connections and return once the
    calls and connections this worker has ended by themselves (or at SIGTERM)."""
    from callrec.service.supervision import ORPHAN_POLL_SECONDS, Succession  # workers only

    settings = service.settings
    sock = service.phone.control_socket
    logger.warning(
        "the main process has gone: still recording and taking calls on port %d until a new "
        "callrec serve on %s takes over",
        settings.control_port,
        service.root,
    )
    succession = Succession(settings, sock) if sock is not None else None
    handing_over = succession is None
    while not stop.is_set():
        if not handing_over and succession is not None and succession.taken_over():
            handing_over = True
            service.phone.stop_listening()
            held = service.held()
            logger.warning(
                "a new main process serves the control port: no new calls here; exiting once "
                "the %d recordings and %d connections left have ended",
                held.recordings,
                held.connections,
            )
        if handing_over:
            held = service.held()
            if not held.recordings and not held.connections:
                logger.info("handed over to the new main process; every call here has ended")
                return
        await _wait_any((stop,), ORPHAN_POLL_SECONDS)
