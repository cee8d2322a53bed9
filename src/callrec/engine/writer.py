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
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from callrec.catalog import Catalog

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class CatalogWriter:
    """Runs catalogue calls on the catalogue thread; see the module docstring."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog")
        self._pending: set[asyncio.Future[object]] = set()
        self._closed = False

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on the catalogue thread; its result or its exception."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: fn(*args, **kwargs))

    def submit(self, fn: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> None:
        """Queue a write nobody waits for (a token's last use); a failure is logged.
        :meth:`close` still waits for it."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._thread, lambda: fn(*args, **kwargs))
        self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[object]) -> None:
        self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            logger.error("catalogue write failed: %s", future.exception())

    async def close(self) -> None:
        """Wait for the queued writes, then end the thread (the catalogue stays open: its
        owner closes it)."""
        if self._closed:
            return
        self._closed = True
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self._thread.shutdown, wait=True)
        )
