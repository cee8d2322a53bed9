"""The job runner: claims due jobs of the kinds it knows and runs their handlers.

One runner per ``callrec serve`` main process (and ``callrec jobs run-once``); several
runners, in several processes or on several hosts, may share one catalogue: a job is claimed
by one of them at a time (:meth:`JobStore.claim`), for a lease that the runner renews while
the handler runs. A runner killed mid-job (``kill -9``, a power cut) leaves the job
``running``: once its lease passes any runner takes it again, and a runner starting on the
same host takes at once the jobs of runners whose process is gone. So a handler may run twice
for one job, never zero times: handlers make their effect idempotent (a webhook's event id,
an enqueue by key).

Handlers run off the recording path: the engine never waits for the runner (an observer only
enqueues, in a task of its own). Async handlers run on the loop, blocking ones on a thread
pool of their kind's own; each kind has its own concurrency, so a slow kind (one slow webhook
endpoint) never delays another. A failed run is retried after an exponential back-off with
jitter, until its kind's attempts or age run out: then the job is ``dead``, shown to admins,
until one retries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import random
import secrets
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from callrec.catalog.jobs import (
    OUTCOME_DEAD,
    OUTCOME_DEFERRED,
    OUTCOME_DONE,
    OUTCOME_RETRY,
    Claim,
    JobInfo,
    JobStore,
    Settlement,
)
from callrec.catalog.records import utcnow
from callrec.exceptions import CallrecError, CatalogError
from callrec.jobs.batching import Batcher

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds :meth:`JobRunner.stop` lets running handlers finish before it cancels them (their
#: jobs stay ``running`` and are taken again after the lease or at the next start).
STOP_GRACE: Final = 5.0
#: How often done jobs older than ``keep`` are purged.
PURGE_EVERY: Final = timedelta(hours=1)

#: A handler: given the claimed job, returns what to put in its history (or None), raises
#: :class:`JobFailed` (or anything) to be retried, :class:`JobDeferred` to wait.
Handler = Callable[[JobInfo], Awaitable[str | None]] | Callable[[JobInfo], str | None]


class JobError(CallrecError):
    """A job's handler could not do its work."""


class JobFailed(JobError):
    """The run failed in a way its kind expects (an endpoint's 500, a nonzero exit): the
    message goes to the job's history without a traceback in the log."""


class JobDeferred(JobError):
    """The job cannot run yet (its recording is not catalogued yet): it waits ``delay``
    seconds, and the attempt does not count (its kind's age limit still holds)."""

    def __init__(self, message: str, *, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When a failed job is tried again, and when its kind gives up on it."""

    #: Runs before the job is dead (the first one included).
    max_attempts: int = 10
    #: A job older than this is dead at its next failure, whatever its attempts.
    max_age: timedelta = timedelta(days=1)
    #: Seconds before the first retry; doubled for each further one, up to ``cap``.
    first: float = 10.0
    cap: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.first <= 0 or self.cap < self.first:
            raise ValueError("a retry policy needs max_attempts >= 1 and 0 < first <= cap")

    def delay(self, attempts: int, jitter: float) -> float:
        """Seconds before retry number ``attempts`` (1: the first), ``jitter`` in [0, 1):
        between half and all of the exponential delay, so that jobs failed together (an
        endpoint that was down) do not all come back at once."""
        base = min(self.cap, self.first * 2 ** min(attempts - 1, 62))
        return float(base * (0.5 + 0.5 * jitter))


@dataclass(frozen=True, slots=True, kw_only=True)
class JobKind:
    """A kind of job and how it runs."""

    name: str
    handler: Handler
    #: Runs of this kind at once, in this process.
    concurrency: int = 1
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: How long a claim lasts without renewal; the runner renews it while the handler runs,
    #: so it only bounds how soon a killed runner's job is taken again.
    lease: timedelta = timedelta(minutes=2)
    #: Work on the disk of the node its key names: a job whose key ends ``@node`` is
    #: claimed only by that node's runners (an upload of that node's recording).
    per_node: bool = False

    def __post_init__(self) -> None:
        if not self.name or self.concurrency < 1:
            raise ValueError("a job kind needs a name and a concurrency >= 1")

    @property
    def blocking(self) -> bool:
        return not inspect.iscoroutinefunction(self.handler)


def runner_name(node: str | None = None) -> str:
    """``node:pid:token``: who holds a claim (the node defaults to the host name; the token
    tells a reused pid apart)."""
    return f"{node or socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a name this module made: not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True


#: Runs ``fn()`` where catalogue writes belong (the catalogue writer thread on SQLite).
WriteCall = Callable[[Callable[[], Any]], Awaitable[Any]]


class JobRunner:
    """Runs the jobs of the registered kinds; see the module docstring.

    ``write`` runs a catalogue write (the catalogue writer on SQLite: its single writer);
    without it, writes run on the runner's own database thread like the reads. ``read``, when
    given, runs the reads too (on SQLite, the writer thread again: one connection for all of
    the process's catalogue work, none more held by the runner)."""

    def __init__(
        self,
        store: JobStore,
        *,
        write: WriteCall | None = None,
        read: WriteCall | None = None,
        poll_interval: float = 2.0,
        keep: timedelta = timedelta(days=30),
        name: str | None = None,
        node: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        #: The node (``node_name``) whose runners this one may judge dead: several nodes
        #: share the catalogue, and a pid means something on its own node only.
        self.node = node or socket.gethostname()
        self.name = name or runner_name(self.node)
        self.poll_interval = poll_interval
        self.keep = keep
        self._clock = clock
        self._write_call = write
        self._read_call = read
        # One thread: the runner's catalogue calls are short and few, and each more thread
        # would hold one more pooled connection.
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobs-db")
        self.kinds: dict[str, JobKind] = {}
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self._schedules: dict[str, timedelta] = {}
        self._scheduled_slot: dict[str, int] = {}
        #: The periodic kinds whose runs are each node's own (:meth:`schedule`).
        self._per_node: set[str] = set()
        self._running: dict[int, tuple[JobInfo, asyncio.Task[None]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_renew = 0.0
        self._last_purge: datetime | None = None
        self._failing = False
        # The ends of the runs that finish meanwhile are settled together: one catalogue
        # round trip (and commit) for them all instead of one each (issue 17).
        self._settle: Batcher[Settlement, bool] = Batcher(self._settle_many, spawn=self.spawn)
        #: (kind, outcome) -> runs of this process, for ``callrec_job_runs_total``.
        self.runs: Counter[tuple[str, str]] = Counter()

    # -- the interface for other parts ------------------------------------------------------

    def register(self, kind: JobKind) -> None:
        """Run jobs of ``kind`` (its name unique in this runner)."""
        if kind.name in self.kinds:
            raise ValueError(f"job kind {kind.name!r} is registered twice")
        self.kinds[kind.name] = kind

    def schedule(self, kind: str, *, every: timedelta, per_node: bool = False) -> None:
        """Enqueue one job of the registered ``kind`` per period of ``every`` (aligned on the
        epoch). Its key is the period's start, so however many processes and nodes schedule
        it, one job runs per period. ``per_node``: one per period and node instead (work on
        a node's own disk: its key ends ``@node``, and only this node's runners claim it)."""
        if kind not in self.kinds:
            raise ValueError(f"schedule of unknown job kind {kind!r}")
        if every <= timedelta(0):
            raise ValueError("a schedule needs a positive period")
        self._schedules[kind] = every
        if per_node:
            self._per_node.add(kind)

    async def enqueue(
        self,
        kind: str,
        key: str,
        payload: Mapping[str, Any],
        *,
        run_after: datetime | None = None,
    ) -> bool:
        """Add a job (a no-op when ``(kind, key)`` exists); whether it was new. Jobs of
        this process's kinds start at once."""
        return await self.enqueue_many([(kind, key, payload)], run_after=run_after) == 1

    async def enqueue_many(
        self,
        jobs: Iterable[tuple[str, str, Mapping[str, Any]]],
        *,
        run_after: datetime | None = None,
    ) -> int:
        todo = [(kind, key, dict(payload)) for kind, key, payload in jobs]
        if not todo:
            return 0
        added: int = await self.write(lambda: self.store.enqueue_many(todo, run_after=run_after))
        if added:
            self._wake.set()
        return added

    def enqueue_soon(self, kind: str, key: str, payload: Mapping[str, Any]) -> None:
        """:meth:`enqueue` in a task of its own, for callers that must not wait (an engine
        observer). A failure is logged; the catch-up makes up for it."""
        self.spawn(self._enqueue_logged(kind, key, payload))

    def spawn(self, work: Awaitable[Any]) -> None:
        """Run ``work`` in a task the runner's :meth:`stop` waits for (then cancels)."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _enqueue_logged(self, kind: str, key: str, payload: Mapping[str, Any]) -> None:
        try:
            await self.enqueue(kind, key, payload)
        except CatalogError as exc:
            logger.error("could not enqueue %s job %s: %s", kind, key, exc)

    @property
    def _node_suffix(self) -> str:
        return f"@{self.node}"

    # -- life cycle -------------------------------------------------------------------------

    async def start(self, *, ready: asyncio.Event | None = None) -> None:
        """Start claiming (once ``ready`` is set: the catalogue migrated)."""
        self._loop_task = asyncio.create_task(self._loop(ready), name="callrec-jobs")

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Claim no more; give running handlers ``grace`` seconds, then cancel them."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for kind in self.kinds.values():
            # A blocking handler's work (a program) is ended, not left to delay the exit.
            close = getattr(kind.handler, "close", None)
            if callable(close) and self._tasks:
                close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)
        self._db.shutdown(wait=False, cancel_futures=True)

    async def run_once(self) -> int:
        """Run every job due now to its end (``callrec jobs run-once``, tests); how many
        runs. A retry or a job enqueued meanwhile runs if due by the time this started
        (so a job that keeps failing at once does not keep it going). Periodic kinds get
        their job for this period."""
        await self._release_dead()
        await self._schedule_due()
        due_by = utcnow()
        count = 0
        while True:
            started = await self._claim_and_start(due_by)
            if not started and not self._running:
                return count
            count += started
            if self._tasks:
                # Bounded, so that the leases of long runs are renewed meanwhile.
                shortest = min(kind.lease for kind in self.kinds.values()).total_seconds()
                await asyncio.wait(
                    set(self._tasks), timeout=shortest / 3, return_when=asyncio.FIRST_COMPLETED
                )
                await self._renew()

    # -- the loop ---------------------------------------------------------------------------

    async def _loop(self, ready: asyncio.Event | None) -> None:
        if ready is not None:
            await ready.wait()
        with contextlib.suppress(CatalogError):
            await self._release_dead()
        while not self._stopping:
            self._wake.clear()
            try:
                await self._schedule_due()
                await self._renew()
                await self._purge()
                await self._claim_and_start()
                if self._failing:
                    self._failing = False
                    logger.warning("the job runner reaches the catalogue again")
            except CatalogError as exc:
                if not self._failing:
                    logger.error("the job runner cannot reach the catalogue: %s", exc)
                self._failing = True
            except Exception:
                # A bug here must not end the runner: logged, and the next look tries again.
                logger.exception("the job runner's loop failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _release_dead(self) -> None:
        """Take back at once the jobs of this node's runners whose process is gone (another
        node's are taken back when their leases pass)."""
        held = await self.read(lambda: self.store.runners(f"{self.node}:"))
        dead = [r for r in held if r != self.name and not _pid_alive(_pid_of(r))]
        if dead:
            released = await self.write(lambda: self.store.release(dead))
            logger.warning("took back %d jobs of ended runners %s", released, ", ".join(dead))

    async def _schedule_due(self) -> None:
        now = self._clock()
        todo: list[tuple[str, str, Mapping[str, Any]]] = []
        for kind, every in self._schedules.items():
            slot = int(now.timestamp() // every.total_seconds())
            if self._scheduled_slot.get(kind) == slot:
                continue
            start = datetime.fromtimestamp(slot * every.total_seconds(), UTC)
            key = start.isoformat() + (self._node_suffix if kind in self._per_node else "")
            todo.append((kind, key, {"slot": start.isoformat()}))
        if todo:
            await self.enqueue_many(todo)
            for kind, _, payload in todo:
                slot_start = datetime.fromisoformat(payload["slot"])
                every = self._schedules[kind]
                self._scheduled_slot[kind] = int(slot_start.timestamp() // every.total_seconds())

    async def _renew(self) -> None:
        if not self._running:
            return
        loop_now = asyncio.get_running_loop().time()
        shortest = min(self.kinds[job.kind].lease for job, _ in self._running.values())
        if loop_now - self._last_renew < shortest.total_seconds() / 3:
            return
        self._last_renew = loop_now
        by_kind: dict[str, list[int]] = {}
        for job, _ in self._running.values():
            by_kind.setdefault(job.kind, []).append(job.id)
        for kind, ids in by_kind.items():
            await self.write(
                functools.partial(self.store.renew, self.name, ids, self.kinds[kind].lease)
            )

    async def _purge(self) -> None:
        now = self._clock()
        if self._last_purge is not None and now - self._last_purge < PURGE_EVERY:
            return
        self._last_purge = now
        purged = await self.write(lambda: self.store.purge(now - self.keep))
        if purged:
            logger.info("purged %d finished jobs", purged)

    async def _claim_and_start(self, due_by: datetime | None = None) -> int:
        if self._stopping:
            return 0
        busy = Counter(job.kind for job, _ in self._running.values())
        free = {
            name: kind.concurrency - busy[name]
            for name, kind in self.kinds.items()
            if kind.concurrency > busy[name]
        }
        if not free:
            return 0
        # A cheap read first: most looks find nothing, and take no write lock for it.
        due = await self.read(lambda: self.store.due_kinds(due_by)) & free.keys()
        if not due:
            return 0
        claims = [
            Claim(
                kind=name,
                limit=free[name],
                lease=self.kinds[name].lease,
                key_suffix=(
                    self._node_suffix
                    if name in self._per_node or self.kinds[name].per_node
                    else None
                ),
            )
            for name in sorted(due)
        ]
        jobs: list[JobInfo] = await self.write(
            lambda: self.store.claim(self.name, claims, due_by=due_by)
        )
        for job in jobs:
            task = asyncio.create_task(self._run(job), name=f"callrec-job-{job.id}")
            self._running[job.id] = (job, task)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(jobs)

    # -- one run ----------------------------------------------------------------------------

    async def _run(self, job: JobInfo) -> None:
        kind = self.kinds[job.kind]
        started = self._clock()
        outcome, detail, run_after = OUTCOME_DONE, "", None
        try:
            try:
                if kind.blocking:
                    executor = self._executor(kind)
                    result = await asyncio.get_running_loop().run_in_executor(
                        executor, kind.handler, job
                    )
                else:
                    result = await kind.handler(job)  # type: ignore[misc]
                detail = str(result or "")
            except JobDeferred as exc:
                outcome, detail = OUTCOME_DEFERRED, str(exc)
                run_after = self._clock() + timedelta(seconds=exc.delay)
                if run_after - job.created_at > kind.retry.max_age:
                    outcome = OUTCOME_DEAD
            except Exception as exc:
                if isinstance(exc, JobFailed):
                    detail = str(exc)
                else:
                    logger.exception("job %d (%s %s) failed", job.id, job.kind, job.key)
                    detail = f"{type(exc).__name__}: {exc}"
                delay = kind.retry.delay(job.attempts, random.random())
                run_after = self._clock() + timedelta(seconds=delay)
                too_old = run_after - job.created_at > kind.retry.max_age
                if job.attempts >= kind.retry.max_attempts or too_old:
                    outcome = OUTCOME_DEAD
                    logger.error(
                        "job %d (%s %s) is dead after %d attempts: %s",
                        job.id,
                        job.kind,
                        job.key,
                        job.attempts,
                        detail,
                    )
                else:
                    outcome = OUTCOME_RETRY
            self.runs[(job.kind, outcome)] += 1
            try:
                mine = await self._settle(
                    Settlement(
                        job=job,
                        outcome=outcome,
                        started_at=started,
                        detail=detail,
                        run_after=run_after,
                    )
                )
            except CatalogError as exc:
                # The job stays running: its lease passes and it runs again.
                logger.error("could not record the end of job %d: %s", job.id, exc)
            else:
                if not mine:
                    logger.warning("job %d was taken by another runner meanwhile", job.id)
        finally:
            self._running.pop(job.id, None)
            self._wake.set()

    def _executor(self, kind: JobKind) -> ThreadPoolExecutor:
        executor = self._executors.get(kind.name)
        if executor is None:
            executor = ThreadPoolExecutor(
                max_workers=kind.concurrency, thread_name_prefix=f"job-{kind.name[:20]}"
            )
            self._executors[kind.name] = executor
        return executor

    # -- the catalogue ----------------------------------------------------------------------

    async def _settle_many(self, settlements: list[Settlement]) -> list[bool]:
        return await self.write(lambda: self.store.settle_many(settlements))

    async def read(self, fn: Callable[[], T]) -> T:
        """``fn()`` (a catalogue read) on the runner's database thread (or ``read``)."""
        if self._read_call is not None:
            value: T = await self._read_call(fn)
            return value
        return await asyncio.get_running_loop().run_in_executor(self._db, fn)

    async def write(self, fn: Callable[[], T]) -> T:
        """``fn()`` (a catalogue write) where writes belong (see the class docstring)."""
        if self._write_call is not None:
            result: T = await self._write_call(fn)
            return result
        return await self.read(fn)


def _pid_of(runner: str) -> int:
    try:
        return int(runner.split(":")[1])
    except (IndexError, ValueError):
        return -1
