"""Group commit: catalogue writes asked for on the event loop, done in batches on its thread.

At a hundred starts and stops a second, one transaction per call is what makes phones wait:
each commit is an fsync (SQLite) or a round trip (PostgreSQL), and each transaction takes the
database's write lock that the other worker processes also want. A :class:`Batcher` queues
the requests and, whenever the catalogue thread is free, hands it everything queued as one
batch (one transaction). Nothing waits for a timer: a lone request goes at once, and requests
that arrive while a batch commits form the next one.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

#: Most requests in one transaction: bounds the time a batch holds the write lock.
MAX_BATCH = 256


class Batcher(Generic[Item, Result]):
    """``await batcher(item)`` runs ``run_batch([..., item, ...])`` via ``submit`` and returns
    the item's slot of the result: a value, or an exception (raised to that caller alone).
    An exception from ``run_batch`` itself is raised to every caller of the batch."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[Item]], Sequence[Result | Exception]],
        submit: Callable[
            [Callable[[], Sequence[Result | Exception]]], Awaitable[Sequence[Result | Exception]]
        ],
        *,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._run_batch = run_batch
        self._submit = submit
        self._max_batch = max_batch
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._task: asyncio.Task[None] | None = None
        #: Batches run and items done, for the metrics and the tests.
        self.batches = 0
        self.items = 0

    @property
    def queued(self) -> int:
        """Requests waiting for the next batch (not those of the batch being run)."""
        return len(self._queue)

    async def __call__(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            items = [item for item, _ in batch]
            try:
                results = await self._submit(functools.partial(self._run_batch, items))
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue  # its caller was cancelled
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
