"""Record first, catalogue later: the journal between the engine and the catalogue.

A call may not wait for, or fail with, the database. The engine hands every catalogue write
(a start, a checkpoint, a finish) to :meth:`Journal.append`, which returns at once: the entry
is appended to this process's journal file (:mod:`callrec.engine.journalfile`: on the
recordings' filesystem, so it outlives a crash, and synced with the audio every tick) and
queued in memory. :meth:`Journal.run` applies the queue to the catalogue in batches on the
catalogue writer's thread, in order, and empties the file once everything in it is applied.
When the catalogue fails (down, hung, read-only, full, its file removed) the queue waits and
is retried with back-off; the state is reported (:meth:`Journal.status`) and logged once per
episode. Applying is idempotent (:mod:`callrec.catalog.replay`), so a crash between a commit
and the file's truncation replays harmlessly. The journals of processes that died are
replayed by the next main process (:func:`replay_orphans`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from callrec.catalog import Catalog
from callrec.catalog.replay import JournalEntry
from callrec.engine import journalfile
from callrec.engine.writer import CatalogWriter
from callrec.exceptions import CatalogError

logger = logging.getLogger(__name__)

#: Most entries applied in one transaction.
MAX_BATCH: Final = 512
#: Seconds a catalogue call may take before the catalogue is reported hung and the call is
#: broken off (:meth:`Catalog.interrupt`).
WRITE_TIMEOUT: Final = 5.0
#: Back-off between failed attempts: the first delay, and the longest.
RETRY_FIRST: Final = 0.5
RETRY_MAX: Final = 10.0

OK: Final = "ok"
DEGRADED: Final = "degraded"
HUNG: Final = "hung"


@dataclass(frozen=True, slots=True)
class JournalStatus:
    """What :meth:`Journal.status` reports (for ``/health`` and ``/metrics``)."""

    #: ``ok``, ``degraded`` (the last attempt failed) or ``hung`` (one is taking too long).
    state: str
    #: Entries not yet in the catalogue, and the age in seconds of the oldest of them.
    backlog: int
    oldest_age: float | None
    #: Entries that could not be written to the journal file (kept in memory meanwhile).
    unwritten: int
    #: Failed attempts to apply since start, and what the last one said.
    failures: int
    last_error: str | None
    applied: int


class Journal:
    """The journal of one recording process; see the module docstring."""

    def __init__(
        self,
        directory: Path,
        writer: CatalogWriter,
        *,
        name: str,
        node: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.writer = writer
        #: The node this process records for (``node_name``): its file name says so, and
        #: the node replays and recovers only its own (docs/scaling.md).
        self.node = node
        # Unique per journal, not only per process: a restarted service in the same process
        # (tests, an embedding program) must not take over a journal it would not replay.
        tag = uuid.uuid4().hex[:8]
        self.path = directory / journalfile.journal_name(name, os.getpid(), tag, node)
        self._clock = clock
        self._file: journalfile.JournalFile | None = None
        #: (sequence number, time appended, entry), oldest first.
        self._pending: deque[tuple[int, float, JournalEntry]] = deque()
        self._unwritten = bytearray()
        self._unwritten_count = 0
        self._seq = itertools.count(1)
        self._applied_seq = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        #: Set once the catalogue's schema is current: nothing is applied before.
        self.ready = asyncio.Event()
        #: Set while everything appended is in the catalogue.
        self.applied = asyncio.Event()
        self.applied.set()
        #: Told uid -> row id of the recordings each applied batch names.
        self.on_catalogued: Callable[[Mapping[str, int]], None] | None = None
        self._state = OK
        self._failures = 0
        self._applied_count = 0
        self._last_error: str | None = None
        self._file_failing = False

    # -- the file ------------------------------------------------------------------------

    def open(self) -> None:
        """Create and lock this process's journal file."""
        self._file = journalfile.JournalFile(self.path)

    def close(self) -> None:
        """Close the file; removed when everything in it is applied, else left for the next
        main process to replay."""
        if self._file is not None:
            done = not self._pending and not self._unwritten
            self._file.close(remove=done)
            self._file = None

    def sync(self) -> None:
        """Make what was appended durable (the engine's I/O thread, once a tick)."""
        file = self._file
        if file is not None and file.size:
            # A failing disk is reported by the next append, once.
            with contextlib.suppress(OSError, ValueError):
                file.sync()

    # -- appending -----------------------------------------------------------------------

    def append(self, entry: JournalEntry) -> int:
        """Journal ``entry`` (never raises, never waits); its sequence number."""
        seq = next(self._seq)
        self._pending.append((seq, self._clock(), entry))
        self._write(journalfile.encode(entry))
        self.applied.clear()
        if self._wake is not None:
            self._wake.set()
        return seq

    def _write(self, data: bytes) -> None:
        if self._file is None:
            return
        if self._unwritten:
            self._unwritten += data
            self._unwritten_count += 1
            return
        try:
            self._file.append(data)
        except OSError as exc:
            self._unwritten += data
            self._unwritten_count += 1
            if not self._file_failing:
                self._file_failing = True
                logger.error(
                    "cannot write the journal %s (%s): catalogue writes are kept in memory "
                    "until it can be written again",
                    self.path,
                    exc.strerror or exc,
                )

    def _retry_unwritten(self) -> None:
        if not self._unwritten or self._file is None:
            return
        try:
            self._file.append(bytes(self._unwritten))
        except OSError:
            return
        self._unwritten.clear()
        self._unwritten_count = 0
        self._file_failing = False
        logger.warning("journal %s written again", self.path)

    # -- applying ------------------------------------------------------------------------

    async def run(self) -> None:
        """Apply the queue to the catalogue, forever (cancel to stop)."""
        self._wake = asyncio.Event()
        await self.ready.wait()
        delay = RETRY_FIRST
        while True:
            self._retry_unwritten()
            if not self._pending:
                self._truncate()
                self.applied.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(itertools.islice(self._pending, MAX_BATCH))
            try:
                ids = await self._apply([entry for _, _, entry in batch])
            except Exception as exc:
                self.failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_FIRST
            for _ in batch:
                self._pending.popleft()
            self._applied_count += len(batch)
            self._applied_seq = batch[-1][0]
            self.recovered()
            self._notify(ids)

    async def _apply(self, entries: list[JournalEntry]) -> dict[str, int]:
        catalog = self.writer.catalog
        task = asyncio.ensure_future(self.writer.run(apply_checked, catalog, entries))
        # Stopped while the call runs: its outcome is of no interest (the entries stay).
        task.add_done_callback(_consume)
        while True:
            done, _ = await asyncio.wait({task}, timeout=WRITE_TIMEOUT)
            if done:
                return task.result()
            # Whatever holds the catalogue thread this long is stuck (a hung server answers
            # nothing, ever): broken off, it fails, and the batch is retried with back-off.
            catalog.interrupt()
            if self._state != HUNG:
                self._state = HUNG
                self._last_error = f"a catalogue write has taken over {WRITE_TIMEOUT:.0f} s"
                logger.error(
                    "catalogue %s not answering: recordings go on, their rows wait in the "
                    "journal (%d entries)",
                    catalog.url,
                    len(self._pending),
                )

    def failed(self, exc: Exception) -> None:
        """A catalogue write failed (the applier or the start-up catch-up): state and log."""
        self._failures += 1
        self._last_error = str(exc)
        if self._state == OK:
            logger.error(
                "catalogue write failed: %s; recordings go on, their rows wait in the journal "
                "(%d entries) and are retried",
                exc,
                len(self._pending),
            )
        self._state = DEGRADED

    def recovered(self) -> None:
        if self._state != OK:
            logger.warning("catalogue writes work again; the journal is catching up")
            self._state = OK
            self._last_error = None

    def _notify(self, ids: Mapping[str, int]) -> None:
        if self.on_catalogued is not None and ids:
            try:
                self.on_catalogued(ids)
            except Exception:
                logger.exception("observer of the journal failed")
        kept: list[tuple[int, asyncio.Future[None]]] = []
        for seq, future in self._waiters:
            if seq <= self._applied_seq:
                if not future.done():
                    future.set_result(None)
            else:
                kept.append((seq, future))
        self._waiters = kept

    def _truncate(self) -> None:
        if self._file is None or not self._file.size or self._unwritten:
            return
        try:
            self._file.truncate()
        except OSError as exc:
            logger.warning("cannot empty the journal %s: %s", self.path, exc)

    async def wait_applied(self, seq: int, timeout: float) -> None:
        """Return once entry ``seq`` is in the catalogue; TimeoutError after ``timeout``."""
        if seq <= self._applied_seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, future))
        await asyncio.wait_for(future, timeout)

    # -- state ---------------------------------------------------------------------------

    def status(self) -> JournalStatus:
        oldest = self._clock() - self._pending[0][1] if self._pending else None
        return JournalStatus(
            state=self._state,
            backlog=len(self._pending),
            oldest_age=oldest,
            unwritten=self._unwritten_count,
            failures=self._failures,
            last_error=self._last_error,
            applied=self._applied_count,
        )


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def apply_checked(catalog: Catalog, entries: list[JournalEntry]) -> dict[str, int]:
    """:meth:`Catalog.apply_journal`, refused while the catalogue's file is not the one it
    opened (a SQLite file removed: writes would vanish with it)."""
    catalog.check_file()
    try:
        return catalog.apply_journal(entries)
    except CatalogError:
        # The next attempt opens new connections: one opened while the database was
        # read-only stays read-only, one to a restarted server is dead.
        catalog.reset_connections()
        raise


def replay_orphans(
    catalog: Catalog, directory: Path, own: Path | None, *, node: str | None = None
) -> int:
    """Apply the journals of processes that ended (blocking: the catalogue thread), then
    remove them; the number of entries replayed. A catalogue failure raises (the caller
    retries later) and leaves the file for the next attempt. With ``node``, only that node's
    journals (and those of no node)."""
    replayed = 0
    for path, fd in journalfile.orphans(directory, own, node=node):
        try:
            entries = list(journalfile.decode_lines(journalfile.read_fd(fd), path.name))
            for start in range(0, len(entries), MAX_BATCH):
                apply_checked(catalog, entries[start : start + MAX_BATCH])
            path.unlink(missing_ok=True)
            replayed += len(entries)
            if entries:
                logger.warning("replayed %d entries of %s (its process ended)", len(entries), path)
        finally:
            os.close(fd)
    return replayed
