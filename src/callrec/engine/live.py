"""Calls being recorded now: snapshots, the registry that holds them, and its read-only view.

The engine registers every live recording (phone sessions and SIP calls alike) here and tells
the registry when one starts and when one has finished (its row is final then). With
``--workers`` the main process's registry also mirrors the recordings of the media worker
processes, as their pipes report them. Front ends see only :class:`LiveView`: the web UI's
live page, ``/api/v1/live`` and ``/metrics`` read it and subscribe to it, and never reach the
engine or a front end to do so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

logger = logging.getLogger(__name__)

#: The two events an observer is told about.
STARTED: Final = "started"
FINISHED: Final = "finished"


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveSession:
    """A read-only snapshot of one recording in progress, for front ends and observers."""

    #: The engine's name for the recording (unique), and its catalogue id once catalogued
    #: (the journal may catalogue it a little later, or much later when the catalogue is down).
    uid: str
    rec_id: int | None
    #: The catalogue's source: ``server`` (a phone's network recording), ``sip`` or ``usb``.
    source: str
    #: The phone's ``id`` (phone sessions) or the SIP Call-ID (SIP calls).
    session_id: str
    device: str
    direction: str
    local_number: str
    local_name: str
    remote_number: str
    remote_name: str
    codec: str
    peer_address: str
    #: The UDP port the audio comes in on (for SIP: the port facing the local party).
    media_port: int
    started_at: datetime
    #: Seconds of audio accepted so far, and its size in bytes (data, without the header).
    duration: float
    bytes_written: int
    #: The packet counters (``received``, ``lost``, ``foreign``...).
    counters: dict[str, int]
    #: Why it ended (``phone_stop``, ``rtp_timeout``...), in the :data:`FINISHED` snapshot.
    stop_reason: str = ""
    #: The WAV being written (stereo for SIP calls), relative to the recordings directory:
    #: the web's live listening reads it as it grows, whichever process writes it.
    path: str = ""
    #: The node recording it (``node_name``); another node's calls come from the catalogue
    #: (docs/scaling.md).
    node: str = ""
    #: True for another node's call (from the catalogue's ``live_calls``): this process
    #: cannot listen to it; ``node_url`` is that node's web address when it published one.
    remote: bool = False
    node_url: str = ""


#: Called on the event loop with :data:`STARTED` or :data:`FINISHED` and a snapshot; must not
#: block. What it raises is logged and ignored.
Observer = Callable[[str, LiveSession], None]


class LiveView(Protocol):
    """What front ends may know of the recordings in progress."""

    @property
    def total_sessions(self) -> int:
        """Calls recorded since this server started (with ``--workers``: by every process)."""
        ...

    def live_sessions(self) -> list[LiveSession]:
        """Every call being recorded now, oldest first."""
        ...

    def add_observer(self, observer: Observer) -> Callable[[], None]:
        """Be told when a recording starts and when it has finished; returns the function
        that unsubscribes."""
        ...


class LiveRegistry:
    """The one registry of a process: its own recordings (through ``snapshots``, a callable
    the engine gives it) and, in the main process of ``--workers``, its workers' mirror."""

    def __init__(self) -> None:
        self._local: Callable[[], Iterable[LiveSession]] = tuple
        self._local_total = 0
        #: Recordings of the media workers, as their pipes report them.
        self._remote: dict[str, LiveSession] = {}
        self._remote_totals: dict[int, int] = {}
        self._observers: list[Observer] = []

    def attach(self, snapshots: Callable[[], Iterable[LiveSession]]) -> None:
        """Where this process's own live recordings come from (the engine)."""
        self._local = snapshots

    # -- LiveView ------------------------------------------------------------------------

    @property
    def total_sessions(self) -> int:
        return self._local_total + sum(self._remote_totals.values())

    @property
    def local_total(self) -> int:
        """Calls recorded by this process alone (what a worker reports)."""
        return self._local_total

    def live_sessions(self) -> list[LiveSession]:
        return sorted(
            [*self._local(), *self._remote.values()],
            key=lambda live: (live.started_at, live.uid),
        )

    def local_sessions(self) -> list[LiveSession]:
        """This process's own live recordings."""
        return list(self._local())

    def add_observer(self, observer: Observer) -> Callable[[], None]:
        self._observers.append(observer)
        return lambda: self._observers.remove(observer) if observer in self._observers else None

    # -- from the engine -----------------------------------------------------------------

    def started(self, live: LiveSession, *, counted: bool = True) -> None:
        """A recording of this process started (``counted``: a call, not an import)."""
        if counted:
            self._local_total += 1
        self.emit(STARTED, live)

    def finished(self, live: LiveSession) -> None:
        """A recording of this process has finished (files closed, the end journaled)."""
        self.emit(FINISHED, live)

    # -- from the worker pool (main process) ---------------------------------------------

    def remote_event(self, event: str, live: LiveSession) -> None:
        """A media worker started or finished a recording: mirror it and tell observers."""
        if event == STARTED:
            self._remote[live.uid] = live
        else:
            self._remote.pop(live.uid, None)
        self.emit(event, live)

    def remote_progress(self, worker: int, total: int, sessions: Iterable[LiveSession]) -> None:
        """A media worker's recordings as they are now (those it has not finished)."""
        self._remote_totals[worker] = total
        for live in sessions:
            if live.uid in self._remote:
                self._remote[live.uid] = live

    def forget_remote(self, low: int, high: int) -> None:
        """A media worker is gone: its recordings (media ports ``low``-``high``) ended."""
        for live in [v for v in self._remote.values() if low <= v.media_port <= high]:
            del self._remote[live.uid]
            self.emit(FINISHED, live)

    def emit(self, event: str, live: LiveSession) -> None:
        for observer in list(self._observers):
            try:
                observer(event, live)
            except Exception:
                logger.exception("live observer %r failed", observer)
