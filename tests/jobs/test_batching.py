"""Group commit (:class:`callrec.jobs.batching.Batcher`): callers waiting at once share one
call, each gets its own answer, and one bad item fails its own caller only."""

from __future__ import annotations

import asyncio

import pytest

from callrec.jobs.batching import Batcher


async def test_callers_waiting_at_once_share_one_call_and_get_their_own_answers() -> None:
    calls: list[list[int]] = []

    async def run(items: list[int]) -> list[str]:
        calls.append(list(items))
        await asyncio.sleep(0)
        return [f"n{i}" for i in items]

    batcher: Batcher[int, str] = Batcher(run)
    answers = await asyncio.gather(*(batcher(i) for i in range(5)))
    assert answers == ["n0", "n1", "n2", "n3", "n4"]
    assert calls == [[0, 1, 2, 3, 4]]
    # Callers that come while a call is under way make the next call, together.
    first = asyncio.ensure_future(batcher(10))
    await asyncio.sleep(0)  # the drain has taken [10] and awaits its call
    later = [asyncio.ensure_future(batcher(i)) for i in (11, 12)]
    assert await asyncio.gather(first, *later) == ["n10", "n11", "n12"]
    assert calls[1:] == [[10], [11, 12]]
    assert (batcher.calls, batcher.items) == (3, 8)


async def test_a_batch_that_fails_is_run_again_item_by_item() -> None:
    calls: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        calls.append(list(items))
        if 13 in items:
            raise ValueError("thirteen")
        return [i * 2 for i in items]

    batcher: Batcher[int, int] = Batcher(run)
    results = await asyncio.gather(*(batcher(i) for i in (1, 13, 3)), return_exceptions=True)
    assert results[0] == 2 and results[2] == 6
    assert isinstance(results[1], ValueError)
    assert calls == [[1, 13, 3], [1], [13], [3]]


async def test_batches_hold_at_most_the_limit_and_a_wrong_count_is_an_error() -> None:
    sizes: list[int] = []

    async def run(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    batcher: Batcher[int, int] = Batcher(run, limit=3)
    assert await asyncio.gather(*(batcher(i) for i in range(7))) == list(range(7))
    assert sizes == [3, 3, 1]

    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    with pytest.raises(RuntimeError, match="answered"):
        await Batcher(short)(1)
    with pytest.raises(ValueError):
        Batcher(run, limit=0)
