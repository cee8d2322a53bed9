"""The live hub asks who is watching before every snapshot (issue 15), without a server."""

from __future__ import annotations

from collections.abc import Iterator

from callrec.catalog import Scope
from callrec.exceptions import CatalogError
from callrec.web.live import ENDED, LiveHub


def viewer_of(answers: list[Scope | Exception | None]) -> object:
    pending: Iterator[Scope | Exception | None] = iter(answers)

    async def viewer() -> Scope | None:
        answer = next(pending)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return viewer


async def frames(answers: list[Scope | Exception | None]) -> list[str]:
    hub = LiveHub(None)
    return [f async for f in hub.events(viewer_of(answers))]  # type: ignore[arg-type]


async def test_a_viewer_who_may_no_longer_watch_gets_an_end_and_no_snapshot() -> None:
    got = await frames([Scope(), None])
    assert got == [
        "retry: 2000\n\n",
        "event: snapshot\ndata: []\n\n",
        f'event: end\ndata: {{"reason": "{ENDED}"}}\n\n',
    ]


async def test_a_catalogue_that_cannot_say_ends_the_stream_without_a_word() -> None:
    # No snapshot (nobody knows who watches) and no `end` (the client should come back).
    assert await frames([CatalogError("down")]) == ["retry: 2000\n\n"]
