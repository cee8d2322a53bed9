"""The composition root: builds everything ``callrec serve`` runs and owns its order.

One place knows how the parts fit together; each part is given what it needs as arguments:

* the catalogue (reads) and the :class:`~callrec.engine.CatalogWriter` (the one thread that
  writes it), the media port range, the :class:`~callrec.engine.LiveRegistry` and the
  :class:`~callrec.engine.RecordingEngine` over them;
* the front ends: the phone control listener (:mod:`callrec.server`), SIP (:mod:`callrec.sip`),
  the web UI (:mod:`callrec.web`, given the live *view*, the writer and the USB importer);
* with ``--workers N``, the pool of media worker processes, each running a :class:`Service`
  of its own with only the phone front end (:mod:`callrec.service.workers`).
* in the main process, the job runner (:mod:`callrec.jobs`: webhooks, on_complete_command,
  periodic work), an observer of the live registry.

Start order: the catalogue is migrated and what a crash left open is recovered, then the engine
ticks, the job runner starts (claiming once the catalogue is ready), the workers start, and the
front ends open their ports (phone control last among the recording ones, so a phone never
meets half a server). Stop order is the reverse: front ends first (no new work; SIP hangs up
and the phone listener finishes its sessions), then the workers, then the engine (whatever is
still open ends ``shutdown``), then the job runner (the last completions enqueued, running
handlers given a moment), then the writer (its queued writes done, the catalogue closed).
Signals belong to :func:`serve_forever`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import queue
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from callrec import filemodes
from callrec.catalog import Catalog
from callrec.catalog.livecalls import LiveCallStore
from callrec.catalog.records import utcnow
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
from callrec.engine.nodes import NodesLive
from callrec.engine.portmemory import PortMemory, ports_dir
from callrec.exceptions import CallrecError, CatalogError, ConfigError
from callrec.filemodes import FileModes
from callrec.health import ProcessHealth, worker_report
from callrec.integrity import signing as chain_signing
from callrec.integrity.keys import KeyFileError, SigningKey, key_file, load_or_create
from callrec.jobs.upload import LocalCache
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
    from callrec.jobs.completion import Completion
    from callrec.jobs.runner import JobRunner
    from callrec.sip.server import SipServer
    from callrec.web.server import WebServer

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds a start waits for the catalogue to be migrated and recovered before it records.
CATALOGUE_START_WAIT = 5.0
#: Seconds a stop waits for the journal to catalogue the last recordings' ends.
CATALOGUE_STOP_WAIT = 10.0
#: Seconds a stopping worker waits for its last messages to reach the main process.
POST_WAIT = 5.0
#: Seconds a stop waits for the hash chain's last signature.
INTEGRITY_STOP_WAIT = 5.0
#: Job kinds of the periodic work after calls (docs/jobs.md).
SIGN_KIND = "integrity.sign"
ARCHIVE_KIND = "archive.sweep"
RETENTION_KIND = "retention.sweep"
#: Seconds after the start before the first archive sweep without the job runner.
ARCHIVE_FIRST_DELAY = 60.0


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
        node=settings.node_name,
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
            journal_dir(self.root),
            self.writer,
            name="worker" if worker else "main",
            node=settings.node_name,
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
        # Several nodes on one PostgreSQL catalogue (docs/scaling.md): the live page shows
        # every node's calls. Not on SQLite: one machine, one node.
        self.nodes: NodesLive | None = None
        if not worker and not settings.database_url.startswith("sqlite"):
            self.nodes = NodesLive(
                self.live,
                LiveCallStore(self.catalog),
                node=settings.node_name,
                node_url=settings.web_public_url,
                healthy=lambda: self.journal.status().state == OK,
                run=self.writer.run,
            )
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
            # With the job runner, the daily sweep is its job (retention.sweep, below).
            self.retention = RetentionTask(
                self.catalog, settings, sweeps=not (settings.jobs_enabled and not worker)
            )
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
                    node_clash=lambda: self.nodes.clash if self.nodes is not None else None,
                ),
                job_runs=lambda: dict(self.jobs.runs) if self.jobs is not None else {},
                every_node=self.nodes,
            )
        self.workers: WorkerPool | None = None
        # Work after a call (webhooks, on_complete_command, periodic work): the main process
        # only; it hears its media workers' recordings finish through the live registry.
        self.jobs: JobRunner | None = None
        self.completion: Completion | None = None
        if settings.jobs_enabled and not worker:
            from callrec.jobs.completion import build_runner
            from callrec.storage.client import store_from

            if settings.transcribe_workers > 0:
                _check_transcription(settings)

            sqlite = self.catalog.url.startswith("sqlite")
            self.jobs, self.completion = build_runner(
                settings,
                self.catalog,
                root=self.root,
                # SQLite takes one writer: the jobs' writes (and their few reads, so that
                # they hold no connection of their own) queue on the catalogue writer.
                write=self.writer.run if sqlite else None,
                read=self.writer.run if sqlite else None,
                store=store_from(settings),
            )
            self.completion.observe(self.live)
        # -- issue 17 part 1: this node's local copies of uploaded recordings, a cache --
        self.cache: LocalCache | None = None
        if settings.storage_url and not worker:
            from callrec.jobs.upload import LocalCache

            cache = LocalCache(self.catalog, settings, root=self.root, write=self.writer.run)
            self.cache = cache if cache.needed else None
        self._started: list[Any] = []
        self._stopped = False
        self._background: list[asyncio.Task[None]] = []
        self._signing_key: SigningKey | None = None
        # -- issue 16 part 4: the archive sweeps when the job runner is off (jobs_enabled) --
        self._archiving: asyncio.Task[None] | None = None
        self._archive_stop = threading.Event()

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
        if not self.worker:
            self._signing_key = _signing_key(self.settings)
            if self._signing_key is not None:
                self._background.append(
                    asyncio.create_task(
                        self._keep_integrity(self._signing_key), name="callrec-integrity"
                    )
                )
        await self.engine.start()
        if self.nodes is not None:
            self._background.append(
                asyncio.create_task(self._share_live(self.nodes), name="callrec-live-calls")
            )
        if self.jobs is not None and self.completion is not None:
            self._register_periodic(self.jobs)
            await self.jobs.start(ready=settled)
            self.jobs.spawn(self.completion.start(settled))
        if self.retention is not None:
            self._background.append(
                asyncio.create_task(self.retention.run(), name="callrec-retention")
            )
        if self.cache is not None:
            self._background.append(asyncio.create_task(self.cache.run(), name="callrec-cache"))
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
        if self.settings.archive_format and not self.worker and self.jobs is None:
            self._archiving = asyncio.create_task(self._archive_sweeps(), name="callrec-archive")

    async def _archive_sweeps(self) -> None:
        """Without the job runner (``jobs_enabled = false``): every ``archive_interval`` (the
        first after at most a minute), one archive sweep."""
        delay = min(ARCHIVE_FIRST_DELAY, self.settings.archive_interval)
        while not self._archive_stop.is_set():
            await asyncio.sleep(delay)
            delay = self.settings.archive_interval
            try:
                await self._archive_once()
            except CatalogError as exc:
                logger.warning("archive sweep put off: %s", exc)
            except Exception:
                logger.exception("archive sweep failed")

    async def _archive_once(self) -> str:
        """One archive sweep on a worker thread, its catalogue writes on the writer's
        thread; what it did, for the log and the job's history."""
        from callrec.engine.archive import archive_sweep

        loop = asyncio.get_running_loop()

        def via(fn: Callable[[], T]) -> T:
            return asyncio.run_coroutine_threadsafe(self.writer.run(fn), loop).result()

        sweep = asyncio.ensure_future(
            asyncio.to_thread(
                archive_sweep,
                self.catalog,
                self.settings,
                datetime.now(UTC),
                via=via,
                stop=self._archive_stop,
            )
        )
        try:
            report = await asyncio.shield(sweep)
        except asyncio.CancelledError:
            # A stop: the thread lets go of its recording at once (the stop event is set)
            # and its last writes need the writer, which waits for it.
            self._archive_stop.set()
            await asyncio.gather(sweep, return_exceptions=True)
            raise
        done = (
            f"{report.count('archived')} archived as {report.format}, "
            f"{report.count('failed')} failed, {report.saved_bytes} bytes saved"
        )
        if report.outcomes or report.cleaned:
            logger.info("archive sweep: %s", done)
        return done

    async def stop(self) -> None:
        """Front ends first, then the workers, the engine and the catalogue writer."""
        if self._stopped:
            return
        self._stopped = True
        if self._archiving is not None:
            # The sweep lets go of the recording in hand; its writes need the writer.
            self._archive_stop.set()
            self._archiving.cancel()
            await asyncio.gather(self._archiving, return_exceptions=True)
        for part in (self.web, self.sip, self.phone, self.workers):
            if part is not None and part in self._started:
                try:
                    await part.stop()
                except Exception:
                    logger.exception("error stopping %s", type(part).__name__)
        await self.engine.stop()
        if self.jobs is not None:
            # After the engine: the last recordings' completion jobs are enqueued.
            await self.jobs.stop()
        if self.completion is not None:
            self.completion.close()
        if self.retention is not None:
            self.retention.stop()
        self.ports.memory.close()
        await self._stop_catalogue(self.journal, self._background, self._sign_at_stop)
        self.catalog.close()
        logger.info("recording server stopped")

    async def _share_live(self, nodes: NodesLive) -> None:
        """Once the catalogue is migrated: this node's live calls to the others, theirs
        here (:mod:`callrec.engine.nodes`)."""
        await self.journal.ready.wait()
        template = self.settings.filename_template
        with contextlib.suppress(CatalogError):
            others = set(await self.writer.run(self.catalog.nodes_seen)) - {nodes.node}
            if others and "{node" not in template:
                logger.warning(
                    "nodes %s record into this catalogue too, and filename_template does not "
                    "name the node: two nodes' recordings may get one path (put {node}/ first: "
                    "docs/scaling.md)",
                    ", ".join(sorted(others)),
                )
        await nodes.run()

    async def _keep_integrity(self, key: SigningKey) -> None:
        """The hash chain's upkeep (docs/integrity.md): once the catalogue is ready, append
        what a crash or an older version left out and sign the head; then, only when the job
        runner is off, sign every ``integrity_sign_interval`` (else that is the runner's
        ``integrity.sign`` job)."""
        await self.journal.ready.wait()
        # With the job runner, signing every interval is its job (integrity.sign): only
        # this start's upkeep (the catch-up after a crash) is done here.
        interval = self.settings.integrity_sign_interval if self.jobs is None else 0
        while True:
            try:
                await self.writer.run(chain_signing.maintain, self.catalog, key, utcnow())
            except CallrecError as exc:
                logger.warning("integrity chain not kept up: %s", exc)
            if interval <= 0:
                return
            await asyncio.sleep(interval)

    def _register_periodic(self, runner: JobRunner) -> None:
        """The periodic work after calls as jobs of the runner (docs/jobs.md): one run per
        period whatever the number of processes, retried, visible on /admin/jobs."""
        from datetime import timedelta

        from callrec.jobs import JobKind, RetryPolicy

        settings = self.settings
        key = self._signing_key
        if key is not None and settings.integrity_sign_interval > 0:

            async def sign(job: Any) -> str:
                await self.writer.run(chain_signing.maintain, self.catalog, key, utcnow())
                return "chain caught up and its head signed"

            runner.register(
                JobKind(
                    name=SIGN_KIND,
                    handler=sign,
                    retry=RetryPolicy(max_attempts=5, max_age=timedelta(hours=1)),
                )
            )
            runner.schedule(SIGN_KIND, every=timedelta(seconds=settings.integrity_sign_interval))
        retention = self.retention
        if retention is not None and not retention.sweeps_here:

            async def retain(job: Any) -> str:
                return await retention.sweep_once()

            runner.register(
                JobKind(
                    name=RETENTION_KIND,
                    handler=retain,
                    lease=timedelta(minutes=10),
                    retry=RetryPolicy(max_attempts=5, max_age=timedelta(hours=20)),
                )
            )
            runner.schedule(RETENTION_KIND, every=timedelta(days=1))
        if settings.archive_format:

            async def archive(job: Any) -> str:
                return await self._archive_once()

            runner.register(
                JobKind(
                    name=ARCHIVE_KIND,
                    handler=archive,
                    # A sweep can run long: a killed runner's sweep is taken again after this.
                    lease=timedelta(minutes=10),
                    retry=RetryPolicy(max_attempts=3, max_age=timedelta(hours=12)),
                )
            )
            # Each node archives its own recordings: they are on its disk (docs/scaling.md).
            runner.schedule(
                ARCHIVE_KIND, every=timedelta(seconds=settings.archive_interval), per_node=True
            )

    async def _sign_at_stop(self) -> None:
        """The chain's upkeep once more at a clean stop, the last ends catalogued: the
        catch-up too (a stop right after the start may come before the first upkeep ran)."""
        if self._signing_key is None or self.journal.status().state != OK:
            return
        try:
            await asyncio.wait_for(
                self.writer.run(chain_signing.maintain, self.catalog, self._signing_key, utcnow()),
                INTEGRITY_STOP_WAIT,
            )
        except (CallrecError, TimeoutError) as exc:
            logger.warning("integrity chain not signed at the stop: %s", exc)

    @staticmethod
    async def _stop_catalogue(
        journal: Journal,
        background: list[asyncio.Task[None]],
        last: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Give the journal a moment to catalogue the last ends, then stop it (``last`` runs
        just before: the catalogue's last words); what it could not apply stays in its file
        for the next start."""
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
        if last is not None:
            await last()
        left = journal.status().backlog
        if left:
            logger.warning("%d catalogue writes left in %s for the next start", left, journal.path)
        journal.close()
        await journal.writer.close()


def _signing_key(settings: Settings) -> SigningKey | None:
    """The chain's signing key, made at the first start; None (logged) when it cannot be
    read or made: recording goes on, unsigned."""
    path = key_file(settings.recordings_dir, settings.integrity_key_file)
    try:
        return load_or_create(path)
    except KeyFileError as exc:
        logger.error("the integrity chain will not be signed: %s", exc)
        return None


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


def _check_transcription(settings: Settings) -> None:
    """A transcription engine that cannot load stops the start, with what is wrong (a model
    directory missing or broken, faster-whisper not installed): not a job failing later."""
    from callrec.transcribe import TranscribeError, check_engine

    try:
        check_engine(
            settings.transcribe_engine,
            model_dir=settings.transcribe_model_dir,
            language=settings.transcribe_language,
        )
    except TranscribeError as exc:
        raise ConfigError(f"transcription: {exc}") from exc


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

    # Messages are pickled and written by a thread of their own, in order: the progress of
    # 1,500 calls takes ~100 ms to pickle, which on the loop held up every start and stop
    # (measured: docs/performance.md, "Stops under load").
    outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()

    def send(message: tuple[Any, ...]) -> None:
        if not orphaned.is_set():
            outbox.put(message)

    def post() -> None:
        while (message := outbox.get()) is not None:
            try:
                conn.send(message)
            except (OSError, ValueError):
                # The main process is gone (its watcher says so too): nothing more to send.
                call_soon(loop, orphaned.set)
                return

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
    poster = threading.Thread(target=post, name="callrec-main-post", daemon=True)
    poster.start()
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
        outbox.put(None)
        await asyncio.to_thread(poster.join, POST_WAIT)
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
