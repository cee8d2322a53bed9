"""The retention sweep and the disk quota inside ``callrec serve``: a small periodic asyncio
task of the main process, until the job runner takes the two functions over.

Every :data:`QUOTA_INTERVAL` seconds it measures the quota (and deletes the oldest past it);
once a day (first :data:`FIRST_SWEEP` seconds after the start) it runs the retention sweep.
Both run on a thread of their own: each batch is a short catalogue transaction of its own, so
the journal's writes and the web's never wait long for SQLite's write lock, and nothing runs
on the event loop. A catalogue that fails is retried at the next quota tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from datetime import UTC, datetime
from typing import Final

from callrec.catalog import Catalog
from callrec.config import Settings
from callrec.exceptions import CatalogError
from callrec.health import QUOTA_WARNING, QuotaState
from callrec.retention.sweep import finish_pending, quota_sweep, sweep

logger = logging.getLogger(__name__)

#: Seconds between retention sweeps.
SWEEP_INTERVAL: Final = 24 * 3600.0
#: Seconds after the start before the first sweep (the catalogue has caught up by then).
FIRST_SWEEP: Final = 60.0
#: Seconds between looks at the disk quota.
QUOTA_INTERVAL: Final = 300.0


class RetentionTask:
    """Runs :func:`~callrec.retention.sweep` daily and :func:`~callrec.retention.quota_sweep`
    every few minutes; :attr:`quota` is what ``/health`` and ``/metrics`` show."""

    def __init__(
        self,
        catalog: Catalog,
        settings: Settings,
        *,
        sweep_interval: float = SWEEP_INTERVAL,
        first_sweep: float = FIRST_SWEEP,
        quota_interval: float = QUOTA_INTERVAL,
        sweeps: bool = True,
    ) -> None:
        self.catalog = catalog
        #: False: the job runner runs the daily sweep (:meth:`sweep_once`, one job per day
        #: across processes); this task then only keeps the quota.
        self.sweeps_here = sweeps
        self.settings = settings
        self.sweep_interval = sweep_interval
        self.first_sweep = first_sweep
        self.quota_interval = quota_interval
        self.quota: QuotaState | None = None
        #: Sweeps completed (for tests and logs).
        self.sweeps = 0
        self._stopping = threading.Event()
        self._swept = asyncio.Event()
        self._warned = False

    def stop(self) -> None:
        """Let a sweep under way end after its current batch."""
        self._stopping.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self.first_sweep
        if not self.sweeps_here:
            # Retention first, the quota after: the runner's first daily sweep (which checks
            # the quota when it ends) comes before this loop's first check, or a period.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._swept.wait(), self.quota_interval)
        while not self._stopping.is_set():
            # Retention first: what it frees, the quota need not take from the oldest.
            if self.sweeps_here and loop.time() >= next_sweep:
                try:
                    await self.sweep_once()
                    next_sweep = loop.time() + self.sweep_interval
                except CatalogError as exc:
                    logger.warning("retention sweep failed, tried again later: %s", exc)
                    next_sweep = loop.time() + self.quota_interval
            await self._finish_own_pending()
            await self._check_quota()
            await asyncio.sleep(max(0.0, min(self.quota_interval, next_sweep - loop.time())))

    async def sweep_once(self) -> str:
        """One retention sweep on a worker thread (what the daily job runs); what it did."""
        result = await asyncio.to_thread(
            sweep, self.catalog, self.settings, datetime.now(UTC), stop=self._stopping
        )
        self.sweeps += 1
        if not self.sweeps_here:
            await self._check_quota()  # what the sweep freed, the quota need not take
            self._swept.set()
        return f"{result.deleted} deleted, {result.files_removed} files removed"

    async def _finish_own_pending(self) -> None:
        """Several nodes on one PostgreSQL catalogue (docs/scaling.md): whichever node's
        sweep deleted a recording of this node, this node removes its files."""
        if self.catalog.url.startswith("sqlite"):
            return  # one node: its sweeps finish what is pending
        try:
            finished, files = await asyncio.to_thread(finish_pending, self.catalog, self.settings)
        except (CatalogError, OSError) as exc:
            logger.warning("files of deleted recordings not removed: %s", exc)
            return
        if files:
            logger.info("removed %d files of %d recordings deleted elsewhere", files, finished)

    async def _check_quota(self) -> None:
        if not self.settings.disk_quota:
            return
        try:
            result = await asyncio.to_thread(quota_sweep, self.catalog, self.settings)
        except (CatalogError, OSError) as exc:
            logger.warning("disk quota not checked: %s", exc)
            return
        if result.limit is None:
            return
        self.quota = QuotaState(limit=result.limit, used=result.used)
        if self.quota.ratio >= QUOTA_WARNING and not self._warned:
            self._warned = True
            logger.warning(
                "disk quota: recordings take %.0f%% of %s (%d of %d bytes)",
                100 * self.quota.ratio,
                self.settings.disk_quota,
                result.used,
                result.limit,
            )
        elif self.quota.ratio < QUOTA_WARNING and self._warned:
            self._warned = False
            logger.info("disk quota: back under %.0f%%", 100 * QUOTA_WARNING)
