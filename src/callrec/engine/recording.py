"""A recording the engine holds open, and how it ended: the handles front ends keep."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from callrec.catalog.replay import JournalStart
from callrec.engine.admission import Ticket
from callrec.engine.spec import MediaSource, RecordingSpec
from callrec.media.wav import WavInfo, WavWriter

S = TypeVar("S", bound=MediaSource)


class RecordingLog(logging.LoggerAdapter[logging.Logger]):
    """Puts the recording's session id (phone id, SIP call) in every line about it."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        assert self.extra is not None
        return f"[{self.extra['session']}] {msg}", kwargs


@dataclass(eq=False, slots=True, kw_only=True)
class Recording(Generic[S]):
    """A recording the engine holds open; front ends keep it as their handle."""

    #: The engine's name for it, known before the catalogue's row (:mod:`.journal`).
    uid: str
    spec: RecordingSpec
    source: S
    #: The recording's own file first, then its companions.
    writers: tuple[WavWriter, ...]
    path: Path
    relpath: str
    started_at: datetime
    started_mono: float
    log: logging.LoggerAdapter[logging.Logger]
    ticket: Ticket
    #: What its sidecar and the catalogue's row start with.
    start: JournalStart
    #: The catalogue's id, once the journal's start entry is applied.
    rec_id: int | None = None
    finishing: bool = False
    #: True once the recording has finished (its row final, observers told).
    ended: bool = False
    #: Made only when someone waits (a call holds thousands of these: no Event each).
    _ended_waiter: asyncio.Future[None] | None = None

    async def wait_ended(self) -> None:
        """Return once the recording has finished: its row is final, observers were told."""
        if self.ended:
            return
        if self._ended_waiter is None:
            self._ended_waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._ended_waiter)

    def mark_ended(self) -> None:
        self.ended = True
        if self._ended_waiter is not None and not self._ended_waiter.done():
            self._ended_waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class Finished:
    """How a recording ended."""

    uid: str
    #: The catalogue's id when the row was already there (else None: catalogued later).
    rec_id: int | None
    #: The journal entry of the finish (:meth:`Journal.wait_applied` waits for its row).
    seq: int
    status: str
    stop_reason: str
    info: WavInfo | None
