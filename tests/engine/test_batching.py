"""Group commit: requests made while a batch runs go together in the next one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from callrec.catalog import Catalog, DuplicatePathError, FinishRecording
from callrec.engine.batching import Batcher
from tests.support.catalog import new_recording
from tests.support.waiting import wait_for


class _Thread:
    """A one-thread executor whose batches can be held until the test lets them go."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.gate = threading.Event()
        self.gate.set()
        #: Batches that reached the thread (held there while the gate is closed).
        self.arrived = 0

    async def __call__(self, fn: Callable[[], Any]) -> Any:
        def held() -> Any:
            self.arrived += 1
            self.gate.wait(5)
            return fn()

        return await asyncio.get_running_loop().run_in_executor(self.pool, held)

    async def holding(self) -> None:
        """Until a batch is on the thread, held at the gate."""
        await wait_for(lambda: self.arrived, what="a batch to reach the catalogue thread")


def _queued(batcher: Batcher[Any, Any]) -> int:
    """Requests waiting for the next batch (no public count: the test reads the queue)."""
    return batcher.queued


async def test_requests_queued_while_a_batch_runs_form_the_next_batch() -> None:
    batches: list[list[int]] = []

    def double(items: Sequence[int]) -> list[int | Exception]:
        batches.append(list(items))
        return [2 * i for i in items]

    thread = _Thread()
    batcher: Batcher[int, int] = Batcher(double, thread)
    thread.gate.clear()
    first = asyncio.ensure_future(batcher(1))
    await thread.holding()  # the first batch is on the thread, held
    rest = [asyncio.ensure_future(batcher(i)) for i in range(2, 7)]
    await wait_for(lambda: _queued(batcher) == 5, what="the other five requests to queue")
    thread.gate.set()
    assert await first == 2
    assert await asyncio.gather(*rest) == [4, 6, 8, 10, 12]
    assert batches == [[1], [2, 3, 4, 5, 6]]
    assert (batcher.batches, batcher.items) == (2, 6)


async def test_an_item_error_goes_to_its_caller_only_and_a_batch_error_to_all() -> None:
    def check(items: Sequence[int]) -> list[int | Exception]:
        if 99 in items:
            raise RuntimeError("database gone")
        return [ValueError(f"bad {i}") if i < 0 else i for i in items]

    thread = _Thread()
    batcher: Batcher[int, int] = Batcher(check, thread, max_batch=3)
    thread.gate.clear()
    calls = [asyncio.ensure_future(batcher(i)) for i in (1, -2, 3, 99, 5)]
    await thread.holding()  # the first three, while 99 and 5 wait for the next batch
    assert _queued(batcher) == 2
    thread.gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad -2"
    # 99 and 5 were one batch (at most 3 per batch, after 1, -2, 3): both get its error.
    assert all(isinstance(r, RuntimeError) for r in results[3:])
    assert await batcher(7) == 7  # and the batcher goes on


async def test_a_cancelled_caller_does_not_break_its_batch() -> None:
    thread = _Thread()
    batcher: Batcher[int, int] = Batcher(lambda items: list(items), thread)
    thread.gate.clear()
    gone = asyncio.ensure_future(batcher(1))
    kept = asyncio.ensure_future(batcher(2))
    await thread.holding()  # both in the batch on the thread
    gone.cancel()
    thread.gate.set()
    assert await kept == 2
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_catalogue_batches_are_rows_in_the_database(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    catalog.migrate()
    thread = _Thread()
    creates: Batcher[Any, int] = Batcher(catalog.create_recordings, thread)
    thread.gate.clear()
    names = ["a.wav", "b.wav", "a.wav", "c.wav"]
    calls = [asyncio.ensure_future(creates(new_recording(path=n))) for n in names]
    await thread.holding()  # all four in one batch
    thread.gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[2], DuplicatePathError)
    ids = [r for r in results if isinstance(r, int)]
    assert sorted(catalog.get(i).path for i in ids) == ["a.wav", "b.wav", "c.wav"]  # type: ignore[union-attr]
    finishes: Batcher[FinishRecording, None] = Batcher(catalog.finish_recordings, thread)
    from datetime import UTC, datetime

    done = [
        FinishRecording(
            rec_id=i,
            status="complete",
            stop_reason="phone_stop",
            end_time=datetime.now(UTC),
            duration=1.0,
            size_bytes=44,
            sha256=None,
            counters=None,
        )
        for i in ids
    ]
    assert await asyncio.gather(*(finishes(f) for f in done)) == [None, None, None]
    assert {catalog.get(i).status for i in ids} == {"complete"}  # type: ignore[union-attr]
    with pytest.raises(Exception, match="already complete"):
        await finishes(done[0])
    catalog.close()
