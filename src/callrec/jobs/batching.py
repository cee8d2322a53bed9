"""Group commit for jobs' catalogue calls (issue 17: upload lag at 1,000 calls a minute).

Many handlers of one kind run at once (the uploads: one per recording), and each ends with a
small catalogue write. On SQLite every write is a hop to the single catalogue writer thread
and a commit; on PostgreSQL a hop to the runner's one database thread: one round trip per
handler serialises them all. :class:`Batcher` gathers the calls that arrive while one round
trip is under way and makes them the next single call (one transaction): the first caller
waits no longer than before, the others share a round trip instead of queueing one each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")

#: Calls of one batch at most (one transaction's size).
BATCH_LIMIT = 256


class Batcher(Generic[K, V]):
    """``await batcher(item)`` runs ``run([item, ...])`` for the items of every caller
    waiting meanwhile, and answers each caller with its own result (``run`` answers in
    order, one result per item). A batch that fails is run again item by item, so that one
    bad item fails its own caller only; ``spawn`` starts the task that drains the callers
    (the job runner's, so that its stop waits for a write under way)."""

    def __init__(
        self,
        run: Callable[[list[K]], Awaitable[Sequence[V]]],
        *,
        spawn: Callable[[Awaitable[Any]], None] | None = None,
        limit: int = BATCH_LIMIT,
    ) -> None:
        if limit < 1:
            raise ValueError("a batch needs room for one call at least")
        self._run = run
        self._spawn = spawn
        self._limit = limit
        self._pending: list[tuple[K, asyncio.Future[V]]] = []
        self._draining = False
        self._task: asyncio.Future[None] | None = None
        #: Round trips made, and items they carried (for tests and benchmarks).
        self.calls = 0
        self.items = 0

    async def __call__(self, item: K) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._draining:
            self._draining = True
            drain = self._drain()
            if self._spawn is not None:
                self._spawn(drain)
            else:
                self._task = asyncio.ensure_future(drain)
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._limit]
                del self._pending[: self._limit]
                live = [(item, future) for item, future in batch if not future.done()]
                if live:
                    await self._settle(live)
        except asyncio.CancelledError:
            for _, future in self._pending:
                future.cancel()
            self._pending.clear()
            raise
        finally:
            self._draining = False

    async def _settle(self, batch: list[tuple[K, asyncio.Future[V]]]) -> None:
        try:
            results = await self._once([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch[0][1], exc)
                return
            logger.debug("a batch of %d failed (%s); its items go one by one", len(batch), exc)
            for one in batch:
                await self._settle([one])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _once(self, items: list[K]) -> Sequence[V]:
        results = await self._run(items)
        if len(results) != len(items):
            raise RuntimeError(f"a batch of {len(items)} answered {len(results)} results")
        self.calls += 1
        self.items += len(items)
        return results


def _fail(future: asyncio.Future[Any], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
