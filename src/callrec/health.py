"""What a recording server says about its parts, for ``/health`` and ``/metrics``.

The composition root knows the parts (the journal, the engine's admission and disk reserve,
the media worker pool); the web reports them. This module is the vocabulary between the two,
so that neither imports the other: :class:`HealthSource` is what the web asks,
:class:`ProcessHealth` is what the root gives it.

Everything here is read from memory except :meth:`HealthSource.disk` (one ``statvfs`` and an
``access``), which the web runs off its event loop with a time bound, since a dead network
filesystem can make even that block. The catalogue itself is probed by the web (a read with a
time bound, never through the catalogue writer's thread): see :mod:`callrec.web.health`.

With ``serve --workers N`` each media worker adds a :class:`WorkerReport` to the progress
message it sends every few seconds (:mod:`callrec.service.workers`); the main process's
:class:`WorkerReports` keeps the latest of each living worker and the counts of those that
ended, so the figures cover every process.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from callrec.engine.admission import Admission
from callrec.engine.journal import DEGRADED, HUNG, OK, Journal, JournalStatus

#: The journal states from best to worst: combining processes reports the worst.
_SEVERITY: Final = {OK: 0, DEGRADED: 1, HUNG: 2}


@dataclass(frozen=True, slots=True)
class DiskState:
    """The recordings' filesystem as new recordings need it: free bytes, the reserve that
    admission keeps free (``disk_reserve_bytes`` / ``_percent``), and whether a file can be
    created there. ``free`` and ``reserve`` are None, and ``error`` says why, when the
    directory could not be looked at (removed, a dead mount)."""

    free: int | None
    reserve: int | None
    writable: bool
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.writable
            and self.free is not None
            and self.reserve is not None
            and self.free >= self.reserve
        )


#: Share of the disk quota from which a warning is logged and shown (issue 16 R).
QUOTA_WARNING: Final = 0.9


@dataclass(frozen=True, slots=True)
class QuotaState:
    """The disk quota (``disk_quota``) as its last check found it: the bytes the catalogued
    recordings take against the limit. Past :data:`QUOTA_WARNING` of it a warning is shown;
    past the limit the oldest unheld recordings are deleted."""

    limit: int
    used: int

    @property
    def ratio(self) -> float:
        return self.used / self.limit if self.limit else 0.0

    @property
    def state(self) -> str:
        """``ok``, ``warning`` (from 90%), ``over`` (what may be deleted did not suffice)."""
        if self.used > self.limit:
            return "over"
        return "warning" if self.ratio >= QUOTA_WARNING else "ok"


@dataclass(frozen=True, slots=True)
class WorkersState:
    """``serve --workers N``: the media worker processes configured (N - 1) and alive now."""

    expected: int
    alive: int


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """What a media worker adds to its progress message: its journal and its refusals."""

    journal: JournalStatus
    refused: dict[str, int]
    #: Control connections it refused, by (listener, reason).
    refused_connections: dict[tuple[str, str], int] = field(default_factory=dict)


def worker_report(journal: Journal, admission: Admission) -> WorkerReport:
    """This process's :class:`WorkerReport` (a media worker's side)."""
    return WorkerReport(
        journal=journal.status(),
        refused=dict(admission.refused),
        refused_connections=dict(admission.refused_connections),
    )


class HealthSource(Protocol):
    """What ``/health`` and ``/metrics`` read of the recording server (see the module)."""

    def journal(self) -> JournalStatus:
        """The catalogue journal: this process's, and its workers' added in."""
        ...

    def refused_starts(self) -> Mapping[str, int]:
        """Starts refused since the server started, by reason (every process)."""
        ...

    def refused_connections(self) -> Mapping[tuple[str, str], int]:
        """Connections and requests refused before any start (an address not allowed, too
        many from one address), by (listener, reason), every process."""
        ...

    def disk(self) -> DiskState:
        """The recordings' filesystem; blocks (a ``statvfs``): call it off the event loop."""
        ...

    def workers(self) -> WorkersState | None:
        """The media workers; None without ``--workers``."""
        ...

    def quota(self) -> QuotaState | None:
        """The disk quota at its last check; None without one (or before the first)."""
        ...

    def node_clash(self) -> str | None:
        """Why this node is refused its ``node_name`` (another running server holds it)."""
        ...


class WorkerReports:
    """The main process's record of its media workers' reports (on its event loop)."""

    def __init__(self) -> None:
        self._latest: dict[int, WorkerReport] = {}
        #: What workers that ended had counted: counters never go back when one restarts.
        self._ended_refused: Counter[str] = Counter()
        self._ended_connections: Counter[tuple[str, str]] = Counter()
        self._ended_failures = 0
        self._ended_applied = 0

    def update(self, index: int, report: WorkerReport) -> None:
        self._latest[index] = report

    def ended(self, index: int) -> None:
        """Worker ``index`` exited (after its last message): keep its counts, drop its
        gauges (its journal is replayed by the main process)."""
        report = self._latest.pop(index, None)
        if report is not None:
            self._ended_refused.update(report.refused)
            self._ended_connections.update(report.refused_connections)
            self._ended_failures += report.journal.failures
            self._ended_applied += report.journal.applied

    def journals(self) -> list[JournalStatus]:
        return [report.journal for report in self._latest.values()]

    def refused(self) -> Counter[str]:
        total = Counter(self._ended_refused)
        for report in self._latest.values():
            total.update(report.refused)
        return total

    def refused_connections(self) -> Counter[tuple[str, str]]:
        total = Counter(self._ended_connections)
        for report in self._latest.values():
            total.update(report.refused_connections)
        return total

    @property
    def ended_failures(self) -> int:
        return self._ended_failures

    @property
    def ended_applied(self) -> int:
        return self._ended_applied


class Workers(Protocol):
    """What :class:`ProcessHealth` reads of the media worker pool."""

    @property
    def expected(self) -> int: ...

    def alive(self) -> int: ...

    @property
    def reports(self) -> WorkerReports: ...


def combine(
    statuses: Iterable[JournalStatus], *, failures: int = 0, applied: int = 0
) -> JournalStatus:
    """One status for several processes' journals: the worst state, the sums, the oldest
    entry; ``failures`` and ``applied`` of processes that ended are added in."""
    items = list(statuses)
    worst = max(items, key=lambda s: _SEVERITY.get(s.state, 0))
    ages = [s.oldest_age for s in items if s.oldest_age is not None]
    return JournalStatus(
        state=worst.state,
        backlog=sum(s.backlog for s in items),
        oldest_age=max(ages) if ages else None,
        unwritten=sum(s.unwritten for s in items),
        failures=failures + sum(s.failures for s in items),
        last_error=worst.last_error or next((s.last_error for s in items if s.last_error), None),
        applied=applied + sum(s.applied for s in items),
    )


class ProcessHealth:
    """The :class:`HealthSource` of a ``callrec serve`` process: its journal, its engine's
    admission, and (a callable, since the pool starts after the web is built) its workers."""

    def __init__(
        self,
        journal: Journal,
        admission: Admission,
        workers: Callable[[], Workers | None] = lambda: None,
        quota: Callable[[], QuotaState | None] = lambda: None,
        node_clash: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._journal = journal
        self._admission = admission
        self._workers = workers
        self._quota = quota
        self._node_clash = node_clash

    def journal(self) -> JournalStatus:
        own = self._journal.status()
        pool = self._workers()
        if pool is None:
            return own
        reports = pool.reports
        return combine(
            [own, *reports.journals()],
            failures=reports.ended_failures,
            applied=reports.ended_applied,
        )

    def refused_starts(self) -> dict[str, int]:
        total = Counter(self._admission.refused)
        pool = self._workers()
        if pool is not None:
            total.update(pool.reports.refused())
        return dict(total)

    def refused_connections(self) -> dict[tuple[str, str], int]:
        total = Counter(self._admission.refused_connections)
        pool = self._workers()
        if pool is not None:
            total.update(pool.reports.refused_connections())
        return dict(total)

    def disk(self) -> DiskState:
        root = self._admission.root
        try:
            space = self._admission.space()
        except OSError as exc:
            return DiskState(
                free=None,
                reserve=None,
                writable=False,
                error=f"cannot look at the recordings directory: {exc.strerror or exc}",
            )
        # access(2) says EROFS for a read-only mount; as root it ignores the mode bits, as
        # creating a file would.
        return DiskState(free=space.free, reserve=space.reserve, writable=os.access(root, os.W_OK))

    def workers(self) -> WorkersState | None:
        pool = self._workers()
        if pool is None:
            return None
        return WorkersState(expected=pool.expected, alive=pool.alive())

    def quota(self) -> QuotaState | None:
        return self._quota()

    def node_clash(self) -> str | None:
        return self._node_clash()
