"""Calls being recorded right now, for the live page (Server-Sent Events) and the API.

The hub watches the engine's live view (phone sessions and SIP calls alike) through its
observer hook and wakes every listener when a recording starts or finishes; between events,
listeners send a fresh snapshot every :data:`TICK` seconds so durations and counters move.
A stream outlives the request that authenticated it, so each snapshot first asks again who is
watching (:data:`Viewer`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import Any, Final

from callrec.catalog import Scope
from callrec.engine import LiveSession, LiveView
from callrec.exceptions import CatalogError

#: Seconds between snapshots on an open event stream.
TICK: Final = 1.0
#: Why a stream ended early, in its ``end`` event.
ENDED: Final = "signed out: the session or token is no longer valid"

#: Who watches a stream, asked before each snapshot: their scope now, or None when their
#: credentials no longer hold; raises CatalogError when the catalogue cannot say.
Viewer = Callable[[], Awaitable[Scope | None]]


def live_dict(live: LiveSession) -> dict[str, Any]:
    data = asdict(live)
    data["started_at"] = live.started_at.isoformat()
    data["duration"] = round(live.duration, 2)
    return data


class LiveHub:
    def __init__(self, view: LiveView | None) -> None:
        self._view = view
        self._wakeups: set[asyncio.Event] = set()
        self._closed = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = None
        if view is not None:
            self._unsubscribe = view.add_observer(self._on_session)

    def _on_session(self, event: str, live: LiveSession) -> None:
        for wakeup in self._wakeups:
            wakeup.set()

    def sessions(self, scope: Scope | None) -> list[LiveSession]:
        if self._view is None:
            return []
        return [
            s
            for s in self._view.live_sessions()
            if scope is None
            or scope.allows(
                local_number=s.local_number, remote_number=s.remote_number, device=s.device
            )
        ]

    def close(self) -> None:
        """End every open event stream (the web server is stopping)."""
        self._closed.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    async def events(self, viewer: Viewer) -> AsyncIterator[str]:
        """SSE frames: a ``snapshot`` event at once, then on every change and every tick.

        ``viewer`` is asked before every snapshot who is watching: their scope as it is now
        (a changed restriction applies to the next snapshot), or None when their credentials
        no longer hold; then an ``end`` event says so and the stream ends, before any other
        number or name is sent. The ASGI layer cancels the iteration when the client goes
        away."""
        wakeup = asyncio.Event()
        self._wakeups.add(wakeup)
        try:
            yield "retry: 2000\n\n"
            while not self._closed.is_set():
                wakeup.clear()
                try:
                    scope = await viewer()
                except CatalogError:
                    # Nobody can tell whether the viewer still may watch: nothing more is
                    # sent. No `end` event: the client reconnects and is asked again.
                    return
                if scope is None:
                    yield f"event: end\ndata: {json.dumps({'reason': ENDED})}\n\n"
                    return
                payload = json.dumps([live_dict(s) for s in self.sessions(scope)])
                yield f"event: snapshot\ndata: {payload}\n\n"
                closed = asyncio.ensure_future(self._closed.wait())
                woken = asyncio.ensure_future(wakeup.wait())
                try:
                    await asyncio.wait({closed, woken}, timeout=TICK)
                finally:
                    closed.cancel()
                    woken.cancel()
        finally:
            self._wakeups.discard(wakeup)
