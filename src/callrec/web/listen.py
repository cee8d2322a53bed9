"""Listening to a call while it is recorded: its growing WAV file, read for every listener.

The recording engine appends each live recording's PCM to its WAV file at every
``sync_interval`` tick, in this process or in a media worker (``serve --workers N``), where
the web has no access to the engine's memory. So a listener reads the file, as any reader of
the page cache does, and the recording never waits for a listener:

* one thread (the hub's poller) looks at every listened file every :data:`POLL_SECONDS`;
  what a file gained since (whole sample frames) is read once for all its listeners, cut
  into :data:`FRAME_SECONDS` frames and handed to the event loop;
* each listener has a bounded queue (:data:`QUEUE_SECONDS` of audio); one that does not keep
  up loses its own oldest frames (counted: ``dropped``), never another listener's and never
  the file's. A listener that acknowledges what it received is sent at most
  :data:`WINDOW_SECONDS` ahead of its acknowledgements, so falling behind shows in its queue
  (and drops) within seconds, not once the kernel's socket buffers are full;
* a listener starts with the first tick after it joined (the newest audio, one tick long),
  and gets the file's last bytes and an end once the recording has finished.

The file is the one the catalogue row names (stereo, left caller and right callee, for SIP
calls); its header says the rate and channels. This module knows no HTTP: the WebSocket that
carries a listener is :mod:`callrec.web.api.listen`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from callrec.engine import FINISHED, LiveSession, LiveView
from callrec.exceptions import CallrecError
from callrec.media.wav import HEADER_SIZE, SAMPLE_WIDTH, WavError, read_format

logger = logging.getLogger(__name__)

#: Seconds between two looks at the listened files (the engine writes every 0.5 s).
POLL_SECONDS: Final = 0.05
#: Seconds of audio per frame sent to a listener.
FRAME_SECONDS: Final = 0.1
#: Seconds of audio a listener may have waiting; beyond, its oldest frames are dropped.
QUEUE_SECONDS: Final = 2.0
#: Seconds of audio sent to a listener and not yet acknowledged by it (``received``), when it
#: acknowledges: the kernel's socket buffers, megabytes large, would otherwise hold minutes
#: of a stalled listener's audio before its queue ever filled.
WINDOW_SECONDS: Final = 1.0


class ListenError(CallrecError):
    """The recording's file cannot be listened to (gone, unreadable, not our WAV)."""


@dataclass(frozen=True, slots=True)
class StreamFormat:
    """What a listener receives: interleaved signed 16-bit little-endian PCM."""

    sample_rate: int
    channels: int

    @property
    def block_align(self) -> int:
        return self.channels * SAMPLE_WIDTH

    @property
    def frame_bytes(self) -> int:
        """Bytes of one :data:`FRAME_SECONDS` frame (whole sample frames)."""
        return max(1, round(self.sample_rate * FRAME_SECONDS)) * self.block_align

    @property
    def queue_frames(self) -> int:
        return max(1, round(QUEUE_SECONDS / FRAME_SECONDS))


@dataclass(frozen=True, slots=True)
class Frame:
    #: Sample frames from the recording's start to this frame's first one.
    position: int
    pcm: bytes


class Listener:
    """One listening connection: its bounded queue of frames and its counters."""

    def __init__(
        self,
        hub: ListenHub,
        tap: _Tap,
        *,
        username: str,
        client: str,
        live: LiveSession,
    ) -> None:
        self._hub = hub
        self._tap = tap
        self.username = username
        self.client = client
        self.uid = live.uid
        self.rec_id = live.rec_id
        self.started_at = datetime.now(UTC)
        self._queue: collections.deque[Frame] = collections.deque()
        self._ready = asyncio.Event()
        self._ended = False
        #: Set when the web server stops (not the call).
        self.stopping = False
        #: Frames handed to the connection, and frames this listener lost (it fell behind).
        self.sent = 0
        self.dropped = 0
        #: Sample frames handed to the connection, and those the client said it received
        #: (None: it never said; then only TCP holds the sender back).
        self.sent_samples = 0
        self.received: int | None = None
        self._window = round(WINDOW_SECONDS * tap.format.sample_rate)

    @property
    def format(self) -> StreamFormat:
        return self._tap.format

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def ended(self) -> bool:
        return self._ended

    def offer(self, frames: Sequence[Frame], skipped: int = 0) -> None:
        """New frames (and ``skipped`` frames the file went past before they were read)."""
        limit = self._tap.format.queue_frames
        self._queue.extend(frames)
        lost = skipped
        while len(self._queue) > limit:
            self._queue.popleft()
            lost += 1
        if lost:
            self.dropped += lost
            self._hub.dropped.inc(lost)
        self._ready.set()

    def end(self, *, stopping: bool = False) -> None:
        """No more frames will come: the recording has finished (or, ``stopping``, the web
        server stops)."""
        self._ended = True
        self.stopping = self.stopping or stopping
        self._ready.set()

    def acknowledge(self, received: int) -> None:
        """The client says it has received ``received`` sample frames in all."""
        if self.received is None or received > self.received:
            self.received = received
            self._ready.set()

    def _window_open(self) -> bool:
        return self.received is None or self.sent_samples - self.received < self._window

    async def get(self) -> Frame | None:
        """The next frame, once the client's window lets it go; None once the recording has
        ended and everything was taken."""
        while not (self._queue and self._window_open()):
            if self._ended and not self._queue:
                return None
            self._ready.clear()
            await self._ready.wait()
        frame = self._queue.popleft()
        self.sent += 1
        self.sent_samples += len(frame.pcm) // self._tap.format.block_align
        self._hub.sent.inc()
        return frame

    def close(self) -> None:
        """The connection is gone: stop reading for it."""
        self._hub.detach(self)


class _Tap:
    """One listened file: read by the poller thread, shared by the recording's listeners."""

    def __init__(self, uid: str, path: Path) -> None:
        self.uid = uid
        self.path = path
        self.listeners: set[Listener] = set()
        #: Set on the loop when the recording has finished; the poller then reads the rest.
        self.finishing = False
        #: Set on the loop once the rest was delivered.
        self.done = False
        # Guards the descriptor: the poller reads under it, the loop closes under it.
        self._lock = threading.Lock()
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            header = os.pread(fd, HEADER_SIZE, 0)
            rate, channels = read_format(header)
            self.format = StreamFormat(sample_rate=rate, channels=channels)
            # Data bytes taken so far: a listener joins at the next tick's audio.
            self.offset = self._available(fd)
        except (OSError, WavError):
            os.close(fd)
            raise
        self._fd = fd

    def _available(self, fd: int) -> int:
        size = os.fstat(fd).st_size - HEADER_SIZE
        return max(0, size - size % self.format.block_align)

    def poll(self) -> tuple[int, int, bytes] | None:
        """(poller thread) What the file gained since the last look, as (sample frames gone
        past unread, position, data); at most a queue's worth is read: a listener keeps no
        more."""
        with self._lock:
            if self._fd < 0:
                return None
            available = self._available(self._fd)
            new = available - self.offset
            if new <= 0:
                return None
            block = self.format.block_align
            cap = self.format.queue_frames * self.format.frame_bytes
            skipped = max(0, new - cap)
            start = self.offset + skipped
            data = os.pread(self._fd, available - start, HEADER_SIZE + start)
            data = data[: len(data) - len(data) % block]
            self.offset = start + len(data)
        return skipped // block, start // block, data

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def cut(position: int, data: bytes, fmt: StreamFormat) -> list[Frame]:
    """``data`` (whole sample frames from ``position``) as frames of at most
    :attr:`StreamFormat.frame_bytes`."""
    size = fmt.frame_bytes
    return [
        Frame(position + offset // fmt.block_align, data[offset : offset + size])
        for offset in range(0, len(data), size)
    ]


class ListenHub:
    """Every listener of this web server, the files they listen to, and the poller thread."""

    def __init__(
        self,
        view: LiveView | None,
        root: Path,
        registry: CollectorRegistry | None = None,
        *,
        thread: bool = True,
    ) -> None:
        """``thread``: poll in a thread of its own (False: whoever calls :meth:`poll_once`)."""
        self._root = root
        self._threaded = thread
        self._taps: dict[str, _Tap] = {}
        #: What the poller thread looks at: replaced whole (never changed in place) by the
        #: loop, so the thread never iterates a dict being changed.
        self._polled: tuple[_Tap, ...] = ()
        self._listeners: set[Listener] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self.sent = Counter(
            "callrec_listen_frames_sent",
            "Frames of live audio handed to listeners (WebSockets) since the server started.",
            registry=registry,
        )
        self.dropped = Counter(
            "callrec_listen_dropped_frames",
            "Frames of live audio dropped for listeners that did not keep up (the recordings "
            "lose nothing).",
            registry=registry,
        )
        self.started = Counter(
            "callrec_listen_sessions",
            "Listening sessions started since the server started.",
            registry=registry,
        )
        self.gauge = Gauge(
            "callrec_listeners", "Listeners connected now (live audio).", registry=registry
        )
        self.gauge.set_function(lambda: len(self._listeners))
        self._unsubscribe: Callable[[], None] | None = None
        if view is not None:
            self._unsubscribe = view.add_observer(self._on_session)

    # -- the loop's side ---------------------------------------------------------------------

    def listeners(self) -> list[Listener]:
        return sorted(self._listeners, key=lambda listener: listener.started_at)

    async def attach(self, live: LiveSession, *, username: str, client: str) -> Listener:
        """A new listener of ``live`` (a recording in progress). Raises
        :class:`ListenError` when its file cannot be read."""
        if self._closed:
            raise ListenError("the web server is stopping")
        tap = self._taps.get(live.uid)
        if tap is None:
            path = self._file(live)
            try:
                made = await asyncio.get_running_loop().run_in_executor(None, _Tap, live.uid, path)
            except FileNotFoundError as exc:
                raise ListenError(f"the recording's file {live.path} is missing") from exc
            except (OSError, WavError) as exc:
                raise ListenError(f"cannot read the recording's file {live.path}: {exc}") from exc
            tap = self._taps.setdefault(live.uid, made)
            if tap is not made:  # another listener opened it meanwhile
                made.close()
            self._polled = tuple(self._taps.values())
        listener = Listener(self, tap, username=username, client=client, live=live)
        tap.listeners.add(listener)
        self._listeners.add(listener)
        self.started.inc()
        if tap.done:
            listener.end()
        self._start_poller()
        return listener

    def detach(self, listener: Listener) -> None:
        self._listeners.discard(listener)
        tap = self._taps.get(listener.uid)
        if tap is None:
            return
        tap.listeners.discard(listener)
        if not tap.listeners:
            del self._taps[listener.uid]
            self._polled = tuple(self._taps.values())
            tap.close()

    def finish(self, uid: str) -> None:
        """The recording ``uid`` has finished: its listeners get the rest, then the end."""
        tap = self._taps.get(uid)
        if tap is not None:
            tap.finishing = True

    def close(self) -> None:
        """The web server stops: end every listener, stop the poller."""
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._stop.set()
        for listener in list(self._listeners):
            listener.end(stopping=True)
        self._polled = ()
        for tap in list(self._taps.values()):
            tap.close()
        self._taps.clear()

    def _file(self, live: LiveSession) -> Path:
        path = (self._root / live.path).resolve()
        if not live.path or not path.is_relative_to(self._root.resolve()):
            raise ListenError(f"recording {live.uid} has no usable file")
        return path

    def _on_session(self, event: str, live: LiveSession) -> None:
        if event == FINISHED:
            self.finish(live.uid)

    def _deliver(self, tap: _Tap, skipped: int, position: int, data: bytes) -> None:
        frames = cut(position, data, tap.format)
        lost = -(-skipped * tap.format.block_align // tap.format.frame_bytes)
        for listener in tap.listeners:
            listener.offer(frames, lost)

    def _finished(self, tap: _Tap) -> None:
        tap.done = True
        for listener in tap.listeners:
            listener.end()

    # -- the poller thread -------------------------------------------------------------------

    def _start_poller(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._thread is not None or not self._threaded:
            return
        self._thread = threading.Thread(target=self._poll, name="callrec-listen", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(POLL_SECONDS) and self.poll_once():
            pass

    def poll_once(self) -> bool:
        """(the poller) One look at every listened file; what they gained goes to the loop.
        False once the loop has closed."""
        loop = self._loop
        assert loop is not None
        for tap in self._polled:
            if tap.done:
                continue
            # The flag before the read: once the recording has finished, its file is
            # complete, so this read takes the rest.
            finishing = tap.finishing
            try:
                got = tap.poll()
            except OSError as exc:
                logger.warning("live listening: cannot read %s: %s", tap.path, exc)
                got, finishing = None, True
            try:
                if got is not None:
                    loop.call_soon_threadsafe(self._deliver, tap, *got)
                if finishing:
                    loop.call_soon_threadsafe(self._finished, tap)
            except RuntimeError:  # the loop has closed
                return False
        return True

    async def stop(self) -> None:
        """Wait for the poller thread (after :meth:`close`)."""
        thread = self._thread
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join)


__all__ = [
    "FRAME_SECONDS",
    "QUEUE_SECONDS",
    "WINDOW_SECONDS",
    "Frame",
    "ListenError",
    "ListenHub",
    "Listener",
    "StreamFormat",
    "cut",
]
