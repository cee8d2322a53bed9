"""Honest health: what ``/api/v1/health`` and ``/metrics`` say about the server's parts.

``/health`` must answer within a second whatever the catalogue does (down, hung, read-only,
its file removed), since that is when an operator or a load balancer asks. So nothing here
waits on the catalogue writer's thread (a hung database keeps it busy), and what may block
(a read from the catalogue, a ``statvfs`` of the recordings' filesystem) runs on a
:class:`BoundedProbe`: a thread of its own with a time bound and at most one probe in flight.
While a probe is stuck the part is reported ``hung`` at once, and no second thread is stuck
behind it.

The parts (see docs/web.md):

* ``catalogue``: ``ok``; ``degraded`` (it answers reads but the journal's writes fail:
  read-only, full); ``down`` (a read fails: unreachable, its file removed); ``hung`` (a read
  or a journal write takes too long);
* ``recordings_disk``: free bytes against the reserve, and whether files can be created;
* ``journal``: catalogue writes not yet applied (recordings go on meanwhile: record first);
* ``workers``: media worker processes alive against those configured (``--workers N``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from callrec.catalog import Catalog
from callrec.catalog.objects import Backlog, ObjectQueries
from callrec.catalog.records import utcnow
from callrec.engine import JournalStatus
from callrec.health import DiskState, HealthSource, QuotaState, WorkersState

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds each part's probe may take; they run together, so /health answers within about
#: this much (the requirement is one second).
PROBE_SECONDS: Final = 0.5

OK: Final = "ok"
DEGRADED: Final = "degraded"
HUNG: Final = "hung"
DOWN: Final = "down"


class ProbeStuck(TimeoutError):
    """A probe did not answer within its bound (or an earlier one still has not)."""


class BoundedProbe(Generic[T]):
    """Runs a blocking ``fn`` on a thread of its own and waits at most ``timeout`` seconds.

    At most one call of ``fn`` is in flight: callers that come while it runs share it (and
    its deadline), and once it has run past ``timeout`` they get :class:`ProbeStuck` at once,
    so a hung database holds one thread, not one per request. The thread is a daemon: one
    stuck for good does not keep the process from exiting."""

    def __init__(self, fn: Callable[[], T], *, timeout: float, name: str) -> None:
        self.fn = fn
        self.timeout = timeout
        self.name = name
        self._running: concurrent.futures.Future[T] | None = None
        self._waited: asyncio.Future[T] | None = None
        self._since = 0.0

    async def __call__(self) -> T:
        running = self._running
        if running is None or running.done() or self._waited is None:
            running = self._running = self._start()
            # One wrapper per run, its outcome always taken: a run given up on and failing
            # later is no "exception was never retrieved".
            self._waited = asyncio.wrap_future(running)
            self._waited.add_done_callback(_taken)
            self._since = time.monotonic()
        waited = time.monotonic() - self._since
        if waited >= self.timeout:
            raise ProbeStuck(f"no answer for {waited:.0f} s")
        try:
            return await asyncio.wait_for(asyncio.shield(self._waited), self.timeout - waited)
        except TimeoutError:
            raise ProbeStuck(f"no answer within {self.timeout:g} s") from None

    def _start(self) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(self.fn())
            except BaseException as exc:  # handed to whoever awaits it
                future.set_exception(exc)

        threading.Thread(target=run, name=f"callrec-probe-{self.name}", daemon=True).start()
        return future


def _taken(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class Episode:
    """Logs a failure when it begins and when it ends, not every time it is seen again (a
    catalogue down for an hour must not write a line per request or per call)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failing = False

    def failed(self, detail: object) -> None:
        if not self.failing:
            self.failing = True
            logger.error("%s: %s", self.what, detail)

    def ok(self) -> None:
        if self.failing:
            self.failing = False
            logger.warning("%s: works again", self.what)


@dataclass(frozen=True, slots=True)
class CatalogueReport:
    state: str
    #: Whether the probe's read answered (a degraded catalogue can still be read).
    readable: bool
    last_error: str | None
    #: The journal's own state (``ok``, ``degraded``, ``hung``); None without a journal.
    journal_state: str | None


@dataclass(frozen=True, slots=True)
class DiskReport:
    state: str
    disk: DiskState | None
    error: str | None


@dataclass(frozen=True, slots=True)
class HealthReport:
    """One look at every part; ``status`` is ``ok`` only when every part is."""

    status: str
    catalogue: CatalogueReport
    #: The parts below are None when the web runs without a recording server.
    disk: DiskReport | None
    journal: JournalStatus | None
    journal_state: str | None
    workers: WorkersState | None
    workers_state: str | None
    refused_starts: Mapping[str, int]
    #: Connections and requests refused before any start, by (listener, reason).
    refused_connections: Mapping[tuple[str, str], int]
    #: The disk quota at its last check (None without one). Its warning does not make the
    #: status degraded: a soft limit must not take the server out of a load balancer.
    quota: QuotaState | None = None
    #: The object store's upload backlog (None without ``storage_url``). Like the quota, it
    #: does not make the status degraded: recording goes on whatever the store does.
    storage: StorageReport | None = None
    #: Why this node is refused its ``node_name``: another running server holds it. Makes
    #: the status degraded (two servers with one name take each other's work).
    node_clash: str | None = None


@dataclass(frozen=True, slots=True)
class StorageReport:
    """Finished recordings not yet verified in the object store (issue 17)."""

    #: ``ok``; ``behind`` when the oldest has waited more than :data:`STORAGE_BEHIND`
    #: seconds (the store down, or uploads slower than calls end); ``unknown`` when the
    #: catalogue did not answer.
    state: str
    backlog: int | None
    oldest_age: float | None
    error: str | None = None


#: Seconds the oldest recording may wait for its upload before storage is ``behind``.
STORAGE_BEHIND: Final = 300.0


def probe_catalogue(catalog: Catalog) -> None:
    """A read that tells a working catalogue: its file still the one opened (SQLite), and the
    schema's revision (cheap, and there before the schema is)."""
    catalog.check_file()
    catalog.revision()


class HealthCheck:
    """Looks at the parts; one per web app. ``source`` is None when the web runs without a
    recording server (then only the catalogue is looked at)."""

    def __init__(
        self,
        catalog: Catalog,
        source: HealthSource | None,
        *,
        timeout: float = PROBE_SECONDS,
        storage: bool = False,
    ) -> None:
        self.source = source
        self._storage: BoundedProbe[Backlog] | None = None
        if storage:
            objects = ObjectQueries(catalog)
            self._storage = BoundedProbe(objects.backlog, timeout=timeout, name="storage")
        self._catalogue = BoundedProbe(
            lambda: probe_catalogue(catalog), timeout=timeout, name="catalogue"
        )
        self._disk: BoundedProbe[DiskState] | None = None
        if source is not None:
            self._disk = BoundedProbe(source.disk, timeout=timeout, name="disk")
        self._episode = Episode("health: the catalogue")

    async def check(self) -> HealthReport:
        catalogue, disk, storage = await asyncio.gather(
            self._look_at_catalogue(), self._look_at_disk(), self._look_at_storage()
        )
        source = self.source
        journal = source.journal() if source is not None else None
        workers = source.workers() if source is not None else None
        journal_state = None if journal is None else OK if not journal.unwritten else DEGRADED
        workers_state = None
        if workers is not None:
            workers_state = OK if workers.alive >= workers.expected else DEGRADED
        catalogue = self._with_journal(catalogue, journal)
        if catalogue.state == OK:
            self._episode.ok()
        else:
            self._episode.failed(f"{catalogue.state} ({catalogue.last_error})")
        node_clash = source.node_clash() if source is not None else None
        states = [catalogue.state, journal_state, workers_state]
        if node_clash is not None:
            states.append(DEGRADED)
        if disk is not None:
            states.append(disk.state)
        return HealthReport(
            status=OK if all(s in (OK, None) for s in states) else DEGRADED,
            catalogue=catalogue,
            disk=disk,
            journal=journal,
            journal_state=journal_state,
            workers=workers,
            workers_state=workers_state,
            refused_starts=source.refused_starts() if source is not None else {},
            refused_connections=source.refused_connections() if source is not None else {},
            quota=source.quota() if source is not None else None,
            storage=storage,
            node_clash=node_clash,
        )

    async def _look_at_storage(self) -> StorageReport | None:
        if self._storage is None:
            return None
        try:
            backlog = await self._storage()
        except ProbeStuck as exc:
            return StorageReport("unknown", None, None, f"counting the backlog: {exc}")
        except Exception as exc:
            return StorageReport("unknown", None, None, str(exc))
        age = None
        if backlog.oldest_end is not None:
            age = max(0.0, (utcnow() - backlog.oldest_end).total_seconds())
        state = "behind" if age is not None and age > STORAGE_BEHIND else OK
        return StorageReport(state, backlog.count, age)

    async def _look_at_catalogue(self) -> CatalogueReport:
        try:
            await self._catalogue()
        except ProbeStuck as exc:
            return CatalogueReport(HUNG, False, f"a catalogue read: {exc}", None)
        except Exception as exc:
            return CatalogueReport(DOWN, False, str(exc), None)
        return CatalogueReport(OK, True, None, None)

    @staticmethod
    def _with_journal(seen: CatalogueReport, journal: JournalStatus | None) -> CatalogueReport:
        """What the probe saw, made worse by what the journal's writes meet: a catalogue
        that can be read but not written is degraded; one whose writes hang is hung."""
        if journal is None:
            return seen
        state, error = seen.state, seen.last_error
        if journal.state == HUNG and state != HUNG:
            state, error = HUNG, journal.last_error
        elif journal.state != OK and state == OK:
            state, error = DEGRADED, journal.last_error
        return CatalogueReport(state, seen.readable, error, journal.state)

    async def _look_at_disk(self) -> DiskReport | None:
        if self._disk is None:
            return None
        try:
            disk = await self._disk()
        except ProbeStuck as exc:
            return DiskReport(HUNG, None, f"looking at the recordings directory: {exc}")
        except Exception as exc:  # a bug in the source: reported, not a 500
            return DiskReport(DEGRADED, None, str(exc))
        return DiskReport(OK if disk.ok else DEGRADED, disk, disk.error)
