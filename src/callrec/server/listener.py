"""The asyncio layer: control listener, media sockets, session lifecycle, catalogue calls.

Protocol decisions live in the sans-I/O cores (``control``, ``rtp``); this module only moves
bytes between them and sockets, files and the catalogue. Media sockets are read together in
batches (:mod:`callrec.server.receiver`); catalogue calls run on one thread (SQLite wants one
writer), starts and stops grouped into one transaction per batch
(:mod:`callrec.server.batching`); file writes run coalesced on one I/O thread and file
finalisation on the default executor, so the event loop only does socket work, decoding and
small appends. With ``--workers N`` several processes run this, see
:mod:`callrec.server.workers`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import shutil
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from callrec.catalog import (
    Catalog,
    DuplicatePathError,
    FinishRecording,
    NewRecording,
    StreamCounters,
)
from callrec.codecs import get_codec
from callrec.config import Settings
from callrec.control import BadRequest, ControlConnection, StartRequest, StopRequest
from callrec.exceptions import ResourceError, UnsupportedCodecError
from callrec.media.naming import FIELDS as NAME_FIELDS
from callrec.media.naming import UnsafePathError, recording_path
from callrec.media.wav import WavError, WavInfo, WavWriter, repair_wav
from callrec.rtp.stream import MediaStream
from callrec.server.batching import Batcher
from callrec.server.ports import PortRange
from callrec.server.receiver import MediaReceiver
from callrec.server.recovery import recover_unfinished
from callrec.server.session import RecordingSession, SessionLog

logger = logging.getLogger(__name__)

#: Fields of the start request that have their own catalogue column; the rest go to extra.
START_COLUMNS = (
    "cmd",
    "id",
    "device",
    "remote_number",
    "remote_name",
    "local_number",
    "local_name",
    "dir",
    "codec",
)
#: How often (in sync ticks) running sessions' counters are saved to the catalogue.
CHECKPOINT_TICKS = 20
#: Seconds a thread waits for the GIL before the holder is asked to let go (Python: 0.005).
SWITCH_INTERVAL = 0.0005
#: Pending control connections the kernel queues for accept().
CONTROL_BACKLOG = 4096
#: TCP keepalive so that a phone that vanished (power cut) ends its session within ~90 s.
KEEPALIVE = {"TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 3}


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveSession:
    """A read-only snapshot of one session being recorded, for front ends (web UI, metrics)."""

    rec_id: int
    session_id: str
    device: str
    direction: str
    local_number: str
    local_name: str
    remote_number: str
    remote_name: str
    codec: str
    peer_address: str
    media_port: int
    started_at: datetime
    #: Seconds of audio accepted so far, and its size in bytes (data, without the header).
    duration: float
    bytes_written: int
    #: The stream's packet counters (``received``, ``lost``, ``foreign``...).
    counters: dict[str, int]


#: Called on the event loop with ``"started"`` or ``"finished"`` and a snapshot; must not block.
SessionObserver = Callable[[str, LiveSession], None]


@dataclass(frozen=True, slots=True)
class FinishedRecording:
    rec_id: int
    status: str
    stop_reason: str
    info: WavInfo | None


class RecordingServer:
    """A running callrec recording server."""

    def __init__(
        self, settings: Settings, catalog: Catalog | None = None, *, recover: bool = True
    ) -> None:
        self.settings = settings
        #: Migrate the catalogue and recover what a crash left open at start (a media
        #: worker leaves both to the main process, which did them before starting it).
        self.recover = recover
        self.catalog = catalog or Catalog(settings.database_url)
        self.root = settings.recordings_dir.resolve()
        self.ports = PortRange(
            settings.media_host, settings.media_port_min, settings.media_port_max
        )
        self.sessions: dict[tuple[str, str, str], RecordingSession] = {}
        #: Every session's media socket, read in batches by the read loop.
        self.media = MediaReceiver()
        self._total_sessions = 0
        #: Sessions of the other processes (``--workers``), as their workers report them.
        self._remote: dict[int, LiveSession] = {}
        self._remote_totals: dict[int, int] = {}
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog")
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="media-io")
        # Starts and stops are catalogued in batches (group commit) on the catalogue thread.
        self._creates: Batcher[NewRecording, int] = Batcher(
            self.catalog.create_recordings, self._in_db
        )
        self._finishes: Batcher[FinishRecording, None] = Batcher(
            self.catalog.finish_recordings, self._in_db
        )
        self._server: asyncio.Server | None = None
        self._control_sock: socket.socket | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._finishing: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._observers: list[SessionObserver] = []

    # -- life cycle ----------------------------------------------------------------------

    async def start(self, *, listen: bool = True) -> None:
        """Migrate and recover (unless told not to), then listen (unless told not to:
        the main process of ``--workers`` listens once its workers are ready)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.recover:
            await self._in_db(self.catalog.migrate)
            recovered = await self._in_db(recover_unfinished, self.catalog, self.root)
            if recovered:
                logger.warning("start-up recovery finished %d recordings", len(recovered))
        if listen:
            await self.listen()

    def reserve_control_port(self) -> int:
        """Bind the control socket now (it listens in :meth:`listen`); returns its port,
        which workers share when the settings ask for any free one (port 0)."""
        if self._control_sock is None:
            host = self.settings.control_host
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if self.settings.workers > 1:
                    # Workers share the port: the kernel spreads new connections over them.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind((host, self.settings.control_port))
            except BaseException:
                sock.close()
                raise
            self._control_sock = sock
        port: int = self._control_sock.getsockname()[1]
        return port

    async def listen(self) -> None:
        """Open the control port and start reading media."""
        self.reserve_control_port()
        self._server = await asyncio.start_server(
            self._serve_connection,
            sock=self._control_sock,
            # Phones connect in bursts (a site's calls after an outage): the default 100
            # pending connections overflow while the loop is busy, and connects time out.
            backlog=CONTROL_BACKLOG,
            limit=self.settings.max_message_bytes * 2,
        )
        self._tick_task = asyncio.create_task(self._tick_loop(), name="callrec-tick")
        self._read_task = asyncio.create_task(self._read_loop(), name="callrec-media")
        logger.info(
            "recording server listening on %s:%d (TCP control), media ports %d-%d, "
            "recordings in %s",
            self.settings.control_host,
            self.control_port,
            self.settings.media_port_min,
            self.settings.media_port_max,
            self.root,
        )

    @property
    def control_port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        """Stop taking calls and finalise every open recording (reason ``shutdown``)."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        elif self._control_sock is not None:
            self._control_sock.close()
        if self._tick_task is not None:
            self._tick_task.cancel()
        if self._read_task is not None:
            self._read_task.cancel()
        for session in list(self.sessions.values()):
            self._spawn_finish(session, "shutdown")
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)
        # Closing the sockets ends each connection's loop normally (EOF); cancelling the
        # handler tasks instead makes asyncio's stream machinery log spurious errors.
        for conn_writer in list(self._writers):
            conn_writer.close()
        if self._connections:
            _done, pending = await asyncio.wait(list(self._connections), timeout=5)
            for task in pending:
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()
        await self._in_db(self.catalog.close)
        self._db.shutdown(wait=True)
        self._io.shutdown(wait=True)
        self.media.close()
        logger.info("recording server stopped")

    async def _in_db(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db, lambda: fn(*args, **kwargs))

    async def in_db(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a catalogue call on the server's one catalogue thread (for components that
        write recordings, e.g. SIP: SQLite wants one writer)."""
        return await self._in_db(fn, *args, **kwargs)

    # -- read-only views for front ends (web UI, metrics) ---------------------------------

    @property
    def total_sessions(self) -> int:
        """Sessions started since this server started (with ``--workers``: by all of them)."""
        return self._total_sessions + sum(self._remote_totals.values())

    def live_sessions(self) -> list[LiveSession]:
        """A snapshot of every session being recorded now, oldest first."""
        local = [_snapshot(s) for s in self.sessions.values() if not s.finishing]
        return sorted(
            [*local, *self._remote.values()], key=lambda live: (live.started_at, live.rec_id)
        )

    def remote_event(self, event: str, live: LiveSession) -> None:
        """A media worker started or finished a session: track it and tell the observers."""
        if event == "started":
            self._remote[live.rec_id] = live
        else:
            self._remote.pop(live.rec_id, None)
        self._emit(event, live)

    def remote_progress(self, worker: int, total: int, sessions: list[LiveSession]) -> None:
        """A media worker's sessions as they are now (those it has not finished)."""
        self._remote_totals[worker] = total
        for live in sessions:
            if live.rec_id in self._remote:
                self._remote[live.rec_id] = live

    def forget_remote(self, low: int, high: int) -> None:
        """A media worker is gone: its sessions (media ports ``low``-``high``) ended."""
        for live in [v for v in self._remote.values() if low <= v.media_port <= high]:
            del self._remote[live.rec_id]
            self._emit("finished", live)

    def add_session_observer(self, observer: SessionObserver) -> Callable[[], None]:
        """Be told when a session starts and when it has finished (its row is final then);
        returns the function that unsubscribes. Observers only watch: what they raise is
        logged and ignored."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer) if observer in self._observers else None

    def _notify(self, event: str, session: RecordingSession) -> None:
        if self._observers:
            self._emit(event, _snapshot(session))

    def _emit(self, event: str, live: LiveSession) -> None:
        for observer in list(self._observers):
            try:
                observer(event, live)
            except Exception:
                logger.exception("session observer %r failed", observer)

    # -- control connections -------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._writers.add(writer)
        peer = writer.get_extra_info("peername") or ("?", 0)
        if len(self._connections) > self.settings.max_connections:
            logger.warning("too many control connections; closing one from %s", peer[0])
            self._connections.discard(task)
            self._writers.discard(writer)
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            _enable_keepalive(sock)
        conn = ControlConnection(
            max_message_bytes=self.settings.max_message_bytes,
            message_idle=self.settings.message_idle,
        )
        loop = asyncio.get_running_loop()
        # A connection without a session must send a whole message every idle-timeout; it
        # is measured from the last *message*, so a peer trickling one byte a second (or
        # sending nothing) cannot hold a descriptor for ever.
        last_message = loop.time()
        bad_in_a_row = 0
        try:
            while not conn.broken:
                now = loop.time()
                deadline = conn.deadline()
                if conn.active_sessions:
                    expiry: float | None = None  # a phone is silent for the whole call
                else:
                    expiry = last_message + self.settings.connection_idle_timeout
                wake = min((t for t in (deadline, expiry) if t is not None), default=None)
                try:
                    data = await asyncio.wait_for(
                        reader.read(65536), None if wake is None else max(0.0, wake - now)
                    )
                except TimeoutError:
                    if expiry is not None and loop.time() >= expiry:
                        logger.info("closing idle control connection from %s:%s", *peer[:2])
                        break
                    data = None
                except (ConnectionError, OSError):
                    break
                if data is not None:
                    if not data:
                        break
                    conn.receive_data(data, loop.time())
                while (event := conn.next_event(loop.time())) is not None:
                    last_message = loop.time()
                    answer = await self._handle(conn, event, writer, peer)
                    if answer:
                        writer.write(answer)
                        await writer.drain()
                    bad_in_a_row = bad_in_a_row + 1 if isinstance(event, BadRequest) else 0
                    if isinstance(event, BadRequest) and (
                        event.fatal or bad_in_a_row >= self.settings.max_bad_requests
                    ):
                        await _linger_close(reader, writer)
                        return
        except (ConnectionError, OSError):
            pass
        finally:
            for session_id in conn.connection_lost():
                session = self.sessions.get(self._key(peer, conn, session_id))
                if session is not None:
                    self._spawn_finish(session, "connection_lost")
            writer.close()
            self._writers.discard(writer)
            self._connections.discard(task)

    def _key(self, peer: Any, conn: ControlConnection, session_id: str) -> tuple[str, str, str]:
        return (str(peer[0]), str(id(conn)), session_id)

    async def _handle(
        self,
        conn: ControlConnection,
        event: StartRequest | StopRequest | BadRequest,
        writer: asyncio.StreamWriter,
        peer: Any,
    ) -> bytes:
        if isinstance(event, BadRequest):
            logger.warning("refused control message from %s: %s", peer[0], event.detail)
            return event.answer
        key = self._key(peer, conn, event.session_id)
        if isinstance(event, StartRequest):
            try:
                server_ip = self.settings.advertised_address or writer.get_extra_info("sockname")[0]
                session = await self._open_session(key, event, peer)
                session.control = conn
            except (UnsupportedCodecError, ResourceError) as exc:
                logger.warning("refused start %s from %s: %s", event.session_id, peer[0], exc)
                return conn.reject_start(event, reason=exc.reason)
            except Exception:
                logger.exception("could not open session %s from %s", event.session_id, peer[0])
                return conn.reject_start(event, reason="internal")
            return conn.accept_start(event, server=server_ip, port=session.port)
        open_session = self.sessions.get(key)
        if open_session is not None and event.was_recording:
            await self._finish(open_session, "phone_stop", stop_fields=dict(event.fields))
        return conn.answer_stop(event)

    # -- sessions ------------------------------------------------------------------------

    async def _open_session(
        self, key: tuple[str, str, str], request: StartRequest, peer: Any
    ) -> RecordingSession:
        if self._closing:
            raise ResourceError("server is shutting down", reason="busy")
        fields = dict(request.fields)
        codec = get_codec(fields.get("codec", ""))
        if len(self.sessions) >= self.settings.max_sessions:
            raise ResourceError(f"{len(self.sessions)} sessions already", reason="busy")
        device = fields.get("device", "")
        per_device = sum(1 for s in self.sessions.values() if s.fields.get("device", "") == device)
        if per_device >= self.settings.max_sessions_per_device:
            raise ResourceError(f"device {device!r} has {per_device} sessions", reason="busy")
        self._check_disk()
        loop = asyncio.get_running_loop()
        started_at = datetime.now(UTC)
        try:
            wanted = recording_path(
                self.settings.filename_template,
                root=self.root,
                start=started_at.astimezone(),
                fields={k: fields.get(k, "") for k in NAME_FIELDS},
            )
        except UnsafePathError as exc:
            raise ResourceError(str(exc), reason="internal") from exc
        stream = MediaStream(
            payload_type=codec.payload_type,
            clock_rate=codec.clock_rate,
            timestamp_units=codec.timestamp_units,
            peer_ip=str(peer[0]),
            accept_foreign=self.settings.accept_foreign_media,
            reorder_window=self.settings.reorder_window,
            max_gap=self.settings.max_gap_seconds,
        )
        sock = self.ports.bind()
        port = sock.getsockname()[1]
        try:
            # The catalogue row comes first and claims the file name (paths are unique
            # there): a crash can leave a row without a file, which recovery marks failed,
            # but never a file that no row knows.
            rec_id, path = await self._claim_path(
                wanted,
                NewRecording(
                    source="server",
                    session_id=request.session_id,
                    device=fields.get("device", ""),
                    direction=_direction(fields.get("dir", "")),
                    local_number=fields.get("local_number", ""),
                    local_name=fields.get("local_name", ""),
                    remote_number=fields.get("remote_number", ""),
                    remote_name=fields.get("remote_name", ""),
                    codec=codec.name,
                    peer_address=str(peer[0]),
                    peer_port=int(peer[1]),
                    media_port=port,
                    start_time=started_at,
                    sample_rate=codec.sample_rate,
                    channels=1,
                    path=wanted.name,
                    extra={"start": _extra_fields(fields)},
                ),
            )
            relpath = path.relative_to(self.root).as_posix()
            try:
                writer = WavWriter(path, sample_rate=codec.sample_rate)
            except OSError as exc:
                full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
                await self._in_db(
                    self.catalog.finish_recording,
                    rec_id,
                    status="failed",
                    stop_reason="disk_full" if full else "write_error",
                    end_time=datetime.now(UTC),
                    duration=0.0,
                    size_bytes=0,
                    sha256=None,
                    counters=None,
                )
                if full:
                    raise ResourceError(f"cannot create {path}: {exc}", reason="disk_full") from exc
                raise
        except BaseException:
            sock.close()
            self.ports.release(port)
            raise
        session = RecordingSession(
            key=key,
            rec_id=rec_id,
            codec=codec,
            stream=stream,
            writer=writer,
            path=path,
            relpath=relpath,
            port=port,
            started_at=started_at,
            started_mono=loop.time(),
            fields=fields,
            log=SessionLog(logger, {"session": request.session_id}),
            sock=sock,
        )
        self.sessions[key] = session
        self.media.add(sock, stream.receive)
        self._total_sessions += 1
        self._notify("started", session)
        session.log.info(
            "recording %s from %s (%s) to %s on UDP %d",
            codec.name,
            peer[0],
            fields.get("device", "?"),
            relpath,
            port,
        )
        return session

    async def _claim_path(self, wanted: Path, new: NewRecording) -> tuple[int, Path]:
        """Create the row under the first free name among ``wanted``, ``<stem>_1``, ..."""
        for n in range(1000):
            path = wanted if n == 0 else wanted.with_name(f"{wanted.stem}_{n}{wanted.suffix}")
            if path.exists() or path.is_symlink():
                continue
            relpath = path.relative_to(self.root).as_posix()
            try:
                rec_id = await self._creates(dataclasses.replace(new, path=relpath))
            except DuplicatePathError:
                continue
            return int(rec_id), path
        raise ResourceError(f"no free file name near {wanted}", reason="internal")

    def _check_disk(self) -> None:
        """Refuse new work while free space is under the reserve: running calls need it."""
        try:
            usage = shutil.disk_usage(self.root)
        except OSError as exc:
            raise ResourceError(f"cannot stat {self.root}: {exc}", reason="disk_full") from exc
        reserve = max(
            self.settings.disk_reserve_bytes,
            int(usage.total * self.settings.disk_reserve_percent / 100),
        )
        if usage.free < reserve:
            raise ResourceError(
                f"{usage.free} bytes free under {self.root}, reserve is {reserve}",
                reason="disk_full",
            )

    def _spawn_finish(self, session: RecordingSession, reason: str) -> None:
        task = asyncio.create_task(self._finish(session, reason))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _finish(
        self,
        session: RecordingSession,
        reason: str,
        *,
        stop_fields: dict[str, str] | None = None,
    ) -> FinishedRecording | None:
        if session.finishing:
            return None
        session.finishing = True
        loop = asyncio.get_running_loop()
        sock = session.sock
        if sock is not None:
            self.media.remove(sock)
        try:
            session.drain(loop.time())
        except Exception:
            session.log.exception("could not read out the media socket")
        session.sock = None
        if sock is not None:
            sock.close()
        self.ports.release(session.port)
        if session.control is not None:
            session.control.end_session(session.session_id)
        status = "complete"
        info: WavInfo | None = None
        try:
            session.drain(loop.time())
            info = await loop.run_in_executor(None, session.writer.close)
        except (OSError, WavError):
            # Disk full or failing: keep what reached the file, with a header that says so.
            session.log.exception(
                "could not finalise %s; keeping what was written", session.relpath
            )
            session.writer.abort()
            if reason not in ("disk_full", "max_size"):
                reason = "write_error"
            try:
                info = await loop.run_in_executor(None, repair_wav, session.path)
            except (OSError, WavError):
                session.log.exception("could not repair %s", session.relpath)
                status = "failed"
        counters = StreamCounters(**session.stream.counters.as_dict())
        try:
            await self._finishes(
                FinishRecording(
                    rec_id=session.rec_id,
                    status=status,
                    stop_reason=reason,
                    end_time=datetime.now(UTC),
                    duration=info.duration if info else session.writer.duration,
                    size_bytes=info.size_bytes if info else 0,
                    sha256=info.sha256 if info else None,
                    counters=counters,
                    phone_stop_reason=(stop_fields or {}).get("reason"),
                    stop_fields=stop_fields,
                )
            )
        except Exception:
            # The row stays 'recording' and start-up recovery will finish it from the file.
            session.log.exception("could not catalogue the end of %s", session.relpath)
        finally:
            self.sessions.pop(session.key, None)
            self._notify("finished", session)
        session.log.info(
            "stopped (%s): %.2f s, %s", reason, info.duration if info else 0.0, counters
        )
        return FinishedRecording(session.rec_id, status, reason, info)

    # -- periodic work -------------------------------------------------------------------

    async def _read_loop(self) -> None:
        """Read all media sockets together every ``media_read_interval`` seconds."""
        loop = asyncio.get_running_loop()
        interval = self.settings.media_read_interval
        read = self.media.read
        while True:
            await asyncio.sleep(interval)
            try:
                read(loop.time())
            except Exception:
                # A bug in one stream must not stop the recording of every other call.
                logger.exception("reading media sockets failed")

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.sync_interval
        ticks = 0
        while True:
            await asyncio.sleep(interval)
            ticks += 1
            now = loop.time()
            due: list[RecordingSession] = []
            for session in list(self.sessions.values()):
                if session.finishing:
                    continue
                try:
                    session.pump(now)  # decode and buffer in memory: no system call
                except WavError:
                    session.log.exception("recording too large; closing it")
                    self._spawn_finish(session, "max_size")
                    continue
                due.append(session)
                limit = self.settings.max_duration
                if limit and now - session.started_mono >= limit:
                    self._spawn_finish(session, "max_duration")
            # All writes of the tick, coalesced, on the I/O thread: the loop keeps reading.
            failed = await loop.run_in_executor(self._io, _flush_writers, due)
            for session, exc in failed:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    session.log.error("disk full; closing the recording with what it has")
                    self._spawn_finish(session, "disk_full")
                else:
                    session.log.error("write failed (%s); closing the recording", exc)
                    self._spawn_finish(session, "write_error")
            if ticks % CHECKPOINT_TICKS == 0 and self.sessions:
                snapshot = {
                    s.rec_id: StreamCounters(**s.stream.counters.as_dict())
                    for s in self.sessions.values()
                }
                try:
                    await self._in_db(self.catalog.checkpoint, snapshot)
                except Exception:
                    logger.exception("counter checkpoint failed")


def _flush_writers(sessions: list[RecordingSession]) -> list[tuple[RecordingSession, OSError]]:
    """Flush each session's WAV writer (runs on the I/O thread); returns the failures."""
    failed: list[tuple[RecordingSession, OSError]] = []
    for session in sessions:
        if session.finishing:
            continue  # its close() flushes, on its own
        try:
            session.writer.flush()
        except ValueError:
            continue  # closed meanwhile by its finish
        except OSError as exc:
            failed.append((session, exc))
    return failed


def _snapshot(session: RecordingSession) -> LiveSession:
    fields = session.fields
    writer = session.writer
    return LiveSession(
        rec_id=session.rec_id,
        session_id=session.session_id,
        device=fields.get("device", ""),
        direction=_direction(fields.get("dir", "")),
        local_number=fields.get("local_number", ""),
        local_name=fields.get("local_name", ""),
        remote_number=fields.get("remote_number", ""),
        remote_name=fields.get("remote_name", ""),
        codec=session.codec.name,
        peer_address=session.key[0],
        media_port=session.port,
        started_at=session.started_at,
        duration=writer.duration,
        bytes_written=writer.frames_written * 2 * writer.channels,
        counters=session.stream.counters.as_dict(),
    )


def _direction(value: str) -> str:
    value = value.strip().lower()
    return value if value in ("in", "out") else ""


def _extra_fields(fields: dict[str, str]) -> dict[str, str]:
    """Start-request fields without a column of their own, and a ``dir`` we could not use."""
    extra = {k: v for k, v in fields.items() if k not in START_COLUMNS}
    if "dir" in fields and _direction(fields["dir"]) != fields["dir"]:
        extra["dir"] = fields["dir"]
    return extra


async def _linger_close(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, seconds: float = 1.0
) -> None:
    """Half-close and discard what the peer still sends for a moment: closing a socket with
    unread input makes the kernel send a reset, which can destroy our answer in flight."""
    try:
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except (TimeoutError, ConnectionError, OSError):
        pass


def _enable_keepalive(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in KEEPALIVE.items():
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass


async def serve_forever(settings: Settings) -> None:
    """Run the server and its components until SIGTERM/SIGINT, then shut down gracefully."""
    import signal

    from callrec.server.components import build_components

    # Signals first: a SIGTERM that arrives during start-up still shuts down gracefully.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from callrec.server.workers import WorkerPool, slice_settings

    workers = settings.workers > 1
    server = RecordingServer(slice_settings(settings, 0) if workers else settings)
    pool = None
    if workers:
        # Recovery first (no worker may record yet), then the workers, and the port opens
        # in the main process once they all listen: a phone never meets half a server.
        await server.start(listen=False)
        port = server.reserve_control_port()
        pool = WorkerPool(dataclasses.replace(settings, control_port=port), server)
        await pool.start()
        await server.listen()
    else:
        await server.start()
    started_components: list[Any] = []
    try:
        for component in build_components(settings, server):
            if stop.is_set():
                break
            await component.start()
            started_components.append(component)
        started = time.monotonic()
        await stop.wait()
        logger.info("shutting down after %.0f s", time.monotonic() - started)
    finally:
        # Front ends first (no new work), the recording core last (it finalises files).
        for component in reversed(started_components):
            try:
                await component.stop()
            except Exception:
                logger.exception("error stopping %s", component)
        if pool is not None:
            await pool.stop()
        await server.stop()


def raise_descriptor_limit() -> None:
    """Every call holds a UDP socket, a TCP connection and a file: ask for all we may have."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover - platform dependent
        pass


def prepare_process() -> None:
    """Process-wide settings of a recording process (the server, or a media worker)."""
    raise_descriptor_limit()
    # The event loop keeps the GIL busy under load; a catalogue or file thread that waits
    # for it would otherwise wait 5 ms at each of its many releases (SQLite, file I/O), and
    # a start's catalogue insert then takes seconds. Ask for the GIL to change hands sooner.
    sys.setswitchinterval(SWITCH_INTERVAL)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop (asyncio's own loop where uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def run(settings: Settings) -> None:
    prepare_process()
    run_loop(serve_forever(settings))
