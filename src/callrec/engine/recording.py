"""A recording the engine holds open, and how it ended: the handles front ends keep."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

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

    rec_id: int
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
    finishing: bool = False
    #: Set when the recording has finished (its row final, observers told).
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True, slots=True)
class Finished:
    """How a recording ended."""

    rec_id: int
    status: str
    stop_reason: str
    info: WavInfo | None
