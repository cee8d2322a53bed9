"""The catalogue writer: the one thread of a process that writes the catalogue.

SQLite takes one writer at a time. So every catalogue write of a ``callrec serve`` process
(the journal's batches of new rows, finishes and checkpoints, start-up recovery, the worker
pool's recovery of a dead worker's calls, the web UI's audit entries, notes, tags, users,
tokens and sign-ins) runs here, on one thread, in the order it was asked for. No recording
waits for it: the engine journals and :mod:`callrec.engine.journal` applies the journal here
in batches (one transaction each) when the catalogue can take them. Reads may run anywhere:
they take their own connections and, in SQLite's WAL mode, never wait for a writer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from callrec.catalog import Catalog

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


#: Seconds :meth:`CatalogWriter.close` waits for the thread's last call (a hung database).
CLOSE_WAIT = 10.0


class CatalogWriter:
    """Runs catalogue calls on the catalogue thread; see the module docstring.

    The thread is a daemon of its own, not an executor's: a call stuck on a hung database
    must not keep the process from exiting (an executor's threads are joined at exit)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="catalog", daemon=True)
        self._thread.start()
        self._pending: set[asyncio.Future[object]] = set()
        self._closed = False

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            job()

    def _call(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def job() -> None:
            if not done.set_running_or_notify_cancel():
                return
            try:
                result = fn()
            except BaseException as exc:  # handed to the caller, whatever it is
                done.set_exception(exc)
            else:
                done.set_result(result)

        self._queue.put(job)
        return asyncio.wrap_future(done, loop=loop)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on the catalogue thread; its result or its exception."""
        return await self._call(lambda: fn(*args, **kwargs))

    def submit(self, fn: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> None:
        """Queue a write nobody waits for (a token's last use); a failure is logged.
        :meth:`close` still waits for it."""
        future = self._call(lambda: fn(*args, **kwargs))
        self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[object]) -> None:
        self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            logger.error("catalogue write failed: %s", future.exception())

    async def close(self) -> None:
        """Wait for the queued writes (at most :data:`CLOSE_WAIT` seconds: a call stuck on a
        hung database is left behind, on its daemon thread), then end the thread. The
        catalogue stays open: its owner closes it."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        ended = asyncio.get_running_loop().run_in_executor(None, self._thread.join, CLOSE_WAIT)
        await ended
        if self._thread.is_alive():
            logger.error(
                "a catalogue call still waits for the database after %.0f s; left behind",
                CLOSE_WAIT,
            )
            return
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
