"""``callrec serve --workers N``: recording sessions spread over N processes.

One Python process reads at most one core's worth of RTP. With ``workers = N`` the main
process runs everything it runs alone (catalogue migrations and start-up recovery first, the
web UI, SIP, and a share of the calls) and starts N - 1 *media workers*: processes that only
record phones' calls (each a :class:`~callrec.service.root.Service` with an engine and the
phone front end). Every process listens on the control port with ``SO_REUSEPORT``, so the kernel
spreads the phones' connections over them; a session lives and ends on the connection that
started it (one connection per session, PROTOCOL.md), so it never has to move. The UDP port
range is cut into N slices, one per process, so each owns its media ports and a crashed
worker's recordings are known by their ports.

All processes write the same catalogue (SQLite in WAL mode with a busy timeout, or
PostgreSQL). Workers tell the main process over a pipe when a recording starts or finishes
and, every ``PROGRESS_SECONDS``, how far each has come; the main process's live registry
mirrors them, so the live page and the metrics show every call. When a worker dies
(``kill -9``, a crash) the main process finishes its open recordings as start-up recovery
would and starts a new worker on the same slice. When the main process dies, its workers
see the pipe close and go on alone: they keep listening and recording (each writes its own
catalogue rows) until a restarted main process serves the port, then take no new connection
and exit once their calls have ended (:mod:`callrec.service.supervision`). SIGTERM stops a
worker, orphaned or not, gracefully (each open recording finalised).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from callrec.config import Settings
from callrec.engine import LiveRegistry
from callrec.engine.catchup import replay_and_recover
from callrec.engine.journal import Journal
from callrec.health import WorkerReport, WorkerReports

logger = logging.getLogger(__name__)

#: Seconds between a worker's progress reports (durations and counters of its sessions).
PROGRESS_SECONDS = 2.0
#: Seconds the main process waits for its workers to listen before it opens the port anyway.
READY_SECONDS = 60.0
#: Seconds a worker has to finalise its recordings after SIGTERM before it is killed.
STOP_GRACE_SECONDS = 30.0
#: A worker that dies this soon after starting is crash-looping: wait longer before the next.
RESTART_DELAYS = (1.0, 5.0, 30.0)
QUICK_DEATH_SECONDS = 10.0


def port_slices(low: int, high: int, count: int) -> list[tuple[int, int]]:
    """``[low, high]`` cut into ``count`` contiguous slices as equal as can be."""
    size = high - low + 1
    if count < 1 or size < count:
        raise ValueError(f"cannot cut {size} ports into {count} slices")
    bounds = [low + size * i // count for i in range(count + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(count)]


def slice_settings(settings: Settings, index: int) -> Settings:
    """The settings of process ``index`` (0: the main one): its own media port slice; only
    the main process runs the web UI and SIP."""
    low, high = port_slices(settings.media_port_min, settings.media_port_max, settings.workers)[
        index
    ]
    changes: dict[str, Any] = {"media_port_min": low, "media_port_max": high}
    if index:
        changes.update(web_enabled=False, sip_enabled=False)
    return dataclasses.replace(settings, **changes)


#: The entry point of a worker process: (the whole server's settings, index, pipe).
WorkerMain = Callable[[Settings, int, Connection], None]

# -- messages from a worker (tuples: cheap to pickle, no class to import) ------------------
#   ("started", LiveSession) | ("finished", LiveSession)
#   ("progress", total_sessions, [LiveSession, ...], WorkerReport)   every PROGRESS_SECONDS
#   ("ready",)


@dataclass(slots=True)
class _Worker:
    index: int
    low: int
    high: int
    process: BaseProcess | None = None
    started: float = 0.0
    quick_deaths: int = 0
    ready: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    #: Set once the process has exited and been reaped (by its watcher: the one joiner).
    exited: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class WorkerPool:
    """The main process's side: starts, watches, restarts and stops the media workers, and
    feeds what they report into the main process's live registry."""

    def __init__(
        self,
        settings: Settings,
        *,
        live: LiveRegistry,
        journal: Journal,
        root: Path,
        target: WorkerMain,
    ) -> None:
        self.settings = settings
        #: What a worker process runs: ``target(settings, index, pipe)`` (a module-level
        #: function, as the spawned process finds it by name).
        self.target = target
        self.live = live
        self.journal = journal
        self.root = root
        slices = port_slices(settings.media_port_min, settings.media_port_max, settings.workers)
        self._workers = [_Worker(i, low, high) for i, (low, high) in enumerate(slices) if i]
        self._context = multiprocessing.get_context("spawn")
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Dead workers' recordings being recovered (cancelled at stop: the next start
        #: replays and recovers what is left).
        self._recoveries: set[asyncio.Task[None]] = set()
        self._closing = False
        #: The workers' journals and refused starts, for /health and /metrics.
        self.reports = WorkerReports()

    @property
    def expected(self) -> int:
        """Media workers configured (``workers`` - 1: the main process records too)."""
        return len(self._workers)

    def alive(self) -> int:
        """Media workers running now (started and not exited)."""
        return sum(1 for w in self._workers if w.process is not None and not w.exited.is_set())

    async def start(self) -> None:
        """Start the workers; returns when each listens (or after ``READY_SECONDS``)."""
        for worker in self._workers:
            self._spawn(worker)
        results = await asyncio.gather(*(self._ready(w) for w in self._workers))
        for worker, ready in zip(self._workers, results, strict=True):
            if not ready:
                logger.error("media worker %d did not start; going on without it", worker.index)
        logger.info("started %d media workers", len(self._workers))

    @staticmethod
    async def _ready(worker: _Worker) -> bool:
        """Whether the worker listens within ``READY_SECONDS`` (False: it exited first, or
        is too slow; its watcher restarts it if it exited)."""
        ready, exited = worker.ready, worker.exited
        waits = [asyncio.ensure_future(ready.wait()), asyncio.ensure_future(exited.wait())]
        _done, pending = await asyncio.wait(
            waits, timeout=READY_SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        return ready.is_set()

    def _spawn(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=self.target,
            args=(self.settings, worker.index, theirs),
            name=f"callrec-worker-{worker.index}",
            daemon=False,
        )
        process.start()
        theirs.close()
        worker.process, worker.started = process, time.monotonic()
        worker.ready, worker.exited = asyncio.Event(), asyncio.Event()
        gone: asyncio.Future[None] = loop.create_future()
        threading.Thread(
            target=self._follow,
            args=(worker, process, ours, loop, gone),
            name=f"callrec-worker-{worker.index}",
            daemon=True,
        ).start()
        task = asyncio.create_task(self._watch(worker, process, gone))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _follow(
        self,
        worker: _Worker,
        process: BaseProcess,
        conn: Connection,
        loop: asyncio.AbstractEventLoop,
        gone: asyncio.Future[None],
    ) -> None:
        """Thread: hand each message of the worker to the loop until its pipe closes, then
        reap it. A thread, because multiprocessing's Connection wants a blocking descriptor
        (a large message arrives in parts) and an event loop's reader would make it
        non-blocking; the only join of the process, because two threads reaping one child
        race for its status; not the default executor, whose few threads finish recordings."""
        with conn:
            while True:
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    break
                except Exception:
                    logger.exception("bad message from worker %d", worker.index)
                    break
                if not call_soon(loop, self._handle, worker, message):
                    break
        process.join()
        # After every message it sent: the loop runs callbacks in order.
        call_soon(loop, _resolve, gone)

    def _handle(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            worker.ready.set()
        elif kind in ("started", "finished"):
            self.live.remote_event(kind, message[1])
        elif kind == "progress":
            self.live.remote_progress(worker.index, message[1], message[2])
            if len(message) > 3 and isinstance(message[3], WorkerReport):
                self.reports.update(worker.index, message[3])

    async def _watch(
        self, worker: _Worker, process: BaseProcess, gone: asyncio.Future[None]
    ) -> None:
        await gone
        worker.exited.set()
        self.reports.ended(worker.index)
        if self._closing:
            return
        logger.error(
            "media worker %d (pid %s) exited with %s; finishing its recordings",
            worker.index,
            process.pid,
            process.exitcode,
        )
        # In the background: with the catalogue down it waits, and the worker must not.
        recovery = asyncio.create_task(self._recover(worker))
        self._recoveries.add(recovery)
        recovery.add_done_callback(self._recoveries.discard)
        if self._closing:
            return
        lived = time.monotonic() - worker.started
        worker.quick_deaths = worker.quick_deaths + 1 if lived < QUICK_DEATH_SECONDS else 0
        delay = RESTART_DELAYS[min(worker.quick_deaths, len(RESTART_DELAYS) - 1)]
        await asyncio.sleep(delay)
        if not self._closing:
            self._spawn(worker)
            logger.warning("media worker %d restarted", worker.index)

    async def _recover(self, worker: _Worker) -> None:
        def mine(rec: Any) -> bool:
            return bool(rec.source == "server" and worker.low <= rec.media_port <= worker.high)

        self.live.forget_remote(worker.low, worker.high)
        # Its journal first (the ends it had not catalogued yet), then what it left open.
        await replay_and_recover(self.journal, self.root, mine)

    async def stop(self) -> None:
        """SIGTERM every worker (each finalises its recordings), SIGKILL what is left."""
        self._closing = True
        for worker in self._workers:
            if worker.process is not None and not worker.exited.is_set():
                worker.process.terminate()
        running = [w for w in self._workers if w.process is not None]
        try:
            await asyncio.wait_for(
                asyncio.gather(*(w.exited.wait() for w in running)), STOP_GRACE_SECONDS
            )
        except TimeoutError:
            for worker in running:
                if not worker.exited.is_set() and worker.process is not None:
                    # Not reaped yet (its watcher still waits), so the pid is still its own.
                    logger.error("media worker %d did not stop in time; killing it", worker.index)
                    worker.process.kill()
        for recovery in self._recoveries:
            recovery.cancel()
        if self._tasks or self._recoveries:
            await asyncio.gather(*self._tasks, *self._recoveries, return_exceptions=True)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def call_soon(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> bool:
    """From a thread; False when the loop is closed (the main process is exiting)."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True
