"""Bounded waits: on a condition (polled) or an event, failing the test with a message that
says what did not happen in time, never "long enough" sleeps.

The server under test (a :class:`callrec.service.Service`) says what it is doing: its engine's
``idle`` event is set while no recording is open, its journal's ``applied`` event while
everything journaled is in the catalogue (record first: rows follow the files), its live
registry tells observers when a recording has finished, and the live snapshots count each
recording's datagrams.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from callrec.engine import LiveSession
from callrec.service import Service

T = TypeVar("T")

#: Seconds a wait on the server under test allows: generous for a loaded 2-core machine,
#: never a timing assertion.
TIMEOUT = 5.0


#: What a wait is for, said in its failure; a callable is asked when the wait fails.
What = str | Callable[[], str]


def _timed_out(what: What, timeout: float) -> AssertionError:
    said = what if isinstance(what, str) else what()
    return AssertionError(f"timed out after {timeout:g} s waiting for {said}")


async def wait_for(
    condition: Callable[[], T], *, what: What, timeout: float = TIMEOUT, interval: float = 0.01
) -> T:
    """Poll ``condition`` on the event loop until it is true; returns its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := condition()):
        if loop.time() > deadline:
            raise _timed_out(what, timeout)
        await asyncio.sleep(interval)
    return value


def wait_until(
    condition: Callable[[], T], *, what: What, timeout: float, interval: float = 0.05
) -> T:
    """:func:`wait_for` for code that blocks (a process starting): polls with the loop held."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout)
        time.sleep(interval)
    return value


async def wait_event(event: asyncio.Event, *, what: What, timeout: float = TIMEOUT) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        raise _timed_out(what, timeout) from None


async def wait_idle(service: Service, *, timeout: float = TIMEOUT, catalogued: bool = True) -> None:
    """Until no recording is open: each one finished and (``catalogued``) its row final.

    Only right once the recordings waited for are known to exist (a start answered success,
    a ``Record: on`` answered 200): before they open, the engine is idle too."""
    await wait_event(
        service.engine.idle, what="every recording to finish (engine idle)", timeout=timeout
    )
    if catalogued:
        await wait_catalogued(service, timeout=timeout)


async def wait_catalogued(service: Service, *, timeout: float = TIMEOUT) -> None:
    """Until everything the server's journal holds is in the catalogue."""
    await wait_event(
        service.journal.applied, what="the journal to be in the catalogue", timeout=timeout
    )


def received(service: Service, session_id: str | None = None) -> int:
    """Datagrams counted so far by the recording ``session_id`` (None: the one recording in
    progress); 0 until it has opened."""
    lives = [s for s in service.live.live_sessions() if session_id in (None, s.session_id)]
    assert len(lives) <= 1, f"{len(lives)} recordings in progress, not one"
    return lives[0].counters["received"] if lives else 0


async def wait_received(
    service: Service, session_id: str | None, count: int, *, timeout: float = TIMEOUT
) -> None:
    """Until the recording ``session_id`` (None: the one in progress) has counted ``count``
    datagrams: those sent to it have all arrived."""
    name = "the recording" if session_id is None else f"recording {session_id!r}"
    await wait_for(
        lambda: received(service, session_id) >= count,
        what=lambda: (
            f"{name} to receive {count} datagrams (it has {received(service, session_id)})"
        ),
        timeout=timeout,
    )


class LiveEvents:
    """What a server's live registry tells its observers, from now on: the recordings that
    started and those that finished (their rows final)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.started: list[LiveSession] = []
        self.finished: list[LiveSession] = []
        self._changed = asyncio.Event()
        self.close = service.live.add_observer(self._observe)

    def _observe(self, event: str, live: LiveSession) -> None:
        (self.started if event == "started" else self.finished).append(live)
        self._changed.set()

    async def wait_finished(self, count: int, *, timeout: float = TIMEOUT) -> list[LiveSession]:
        """Until ``count`` recordings have finished; returns them in the order they did."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.finished) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            what = f"{count} recordings to finish ({len(self.finished)} did)"
            raise _timed_out(what, timeout) from None
        await wait_catalogued(self.service, timeout=timeout)
        return self.finished[:count]
