"""The phone front end: the TCP control listener and the media sockets of phone sessions.

Protocol decisions live in the sans-I/O control core (:mod:`callrec.control`); recording in
the engine (:mod:`callrec.engine`). This module only moves bytes: a start request becomes an
:meth:`~callrec.engine.RecordingEngine.open` with a :class:`~callrec.server.source.PhoneSource`
on a fresh UDP port, a stop request (or a lost connection) an
:meth:`~callrec.engine.RecordingEngine.finish`, and the media sockets of every session are read
together in batches (:mod:`callrec.server.receiver`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from typing import Any, Final

from callrec.access import AllowList, DeviceAllowList, RefusalLog
from callrec.codecs import get_codec
from callrec.config import Settings
from callrec.control import BadRequest, ControlConnection, StartRequest, StopRequest
from callrec.engine import PortRange, Recording, RecordingEngine, RecordingSpec
from callrec.engine.spec import CONNECTION_LOST, PHONE_STOP, RTP_TIMEOUT, SHUTDOWN
from callrec.exceptions import ResourceError, UnsupportedCodecError
from callrec.media.naming import FIELDS as NAME_FIELDS
from callrec.net import new_socket, plain_ip, plain_sockaddr, url_host
from callrec.rtp.latch import MediaLatch
from callrec.rtp.stream import MediaStream
from callrec.server.receiver import MediaReceiver
from callrec.server.source import PhoneSource

logger = logging.getLogger(__name__)

#: Fields of the start request that have their own catalogue column; the rest go to extra.
START_COLUMNS: Final = (
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
#: Pending control connections the kernel queues for accept().
CONTROL_BACKLOG: Final = 4096
#: How often sessions are checked for the RTP timeout, in seconds.
RTP_TIMEOUT_CHECK: Final = 1.0
#: How often latched sessions are checked for a silent port, in seconds.
LATCH_CHECK: Final = 0.25
#: Seconds one read of the media sockets may take before the loop serves the rest: what a
#: start or a stop waits behind, at most, per step, when the process is short of CPU.
READ_BUDGET: Final = 0.01
#: Addresses that bind every local address: a latched socket must be bound to the one the
#: phone sends to, as connect() would otherwise pin the routing table's choice.
WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::"})
#: Connections from addresses not in ``control_allow`` being answered ``forbidden`` at once;
#: past this many, further ones are closed without an answer (a flood of them costs nothing).
MAX_FORBIDDEN_ANSWERS: Final = 64
#: Seconds a connection from an address not allowed may take to send its start (phones send
#: it at once) before it is closed unanswered.
FORBIDDEN_WAIT: Final = 2.0
#: TCP keepalive so that a phone that vanished (power cut) ends its session within ~90 s.
KEEPALIVE: Final = {"TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 3}

#: A phone session: (peer ip, the connection, the phone's id).
SessionKey = tuple[str, str, str]
#: How a stop on another connection finds its session: (address, MAC, id) and, for a stop
#: that does not name the device, (address, "", id).
PhoneKey = tuple[str, str, str]


class _Session:
    """What the front end keeps of one phone session besides its recording."""

    __slots__ = ("conn", "phone_keys", "rec", "writer")

    def __init__(
        self,
        rec: Recording[PhoneSource],
        conn: ControlConnection,
        writer: asyncio.StreamWriter,
        phone_keys: tuple[PhoneKey, ...],
    ) -> None:
        self.rec = rec
        self.conn = conn
        self.writer = writer
        self.phone_keys = phone_keys


class PhoneServer:
    """Takes phones' RecordStart/StopRequests on the control port and records their RTP."""

    def __init__(self, settings: Settings, *, engine: RecordingEngine, ports: PortRange) -> None:
        self.settings = settings
        self.engine = engine
        self.ports = ports
        #: Sessions being recorded, by (peer, connection, phone's id).
        self.sessions: dict[SessionKey, Recording[PhoneSource]] = {}
        self._session_info: dict[SessionKey, _Session] = {}
        #: The same sessions by phone and id, for a stop that comes on a new connection.
        self._by_phone: dict[PhoneKey, SessionKey] = {}
        #: Every session's media socket, read in batches by the read loop.
        self.media = MediaReceiver()
        self._server: asyncio.Server | None = None
        self._control_sock: socket.socket | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = False
        self._allow = AllowList(settings.control_allow, setting="control_allow")
        self._allow_devices = DeviceAllowList(
            settings.control_allow_devices, setting="control_allow_devices"
        )
        #: Open control connections by source address, for ``max_connections_per_source``.
        self._per_source: Counter[str] = Counter()
        self._forbidden_answers = 0
        #: Refused connections and starts, logged once per episode of a source and reason.
        self.refusals = RefusalLog("control")

    # -- life cycle ----------------------------------------------------------------------

    def reserve_control_port(self) -> int:
        """Bind the control socket now (it listens in :meth:`listen`); returns its port,
        which workers share when the settings ask for any free one (port 0)."""
        if self._control_sock is None:
            host = self.settings.control_host
            # "::" is dual stack: IPv4 phones connect too (their address is normalised).
            sock = new_socket(host, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                # Shared, whatever ``workers`` says: the processes of a pool share the port
                # (the kernel spreads new connections over them), and a restarted server
                # binds it beside orphaned workers of the one before until they hand over
                # (callrec.service.supervision). Only processes of the same user can join; a
                # second server on the same recordings is refused by its lock instead.
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
        self._read_task = asyncio.create_task(self._read_loop(), name="callrec-media")
        logger.info(
            "phone control listening on %s:%d (TCP), media ports %d-%d, recordings in %s",
            url_host(self.settings.control_host),
            self.control_port,
            self.settings.media_port_min,
            self.settings.media_port_max,
            self.engine.root,
        )

    @property
    def control_port(self) -> int:
        if self._server is None:
            return self.reserve_control_port()
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def control_socket(self) -> socket.socket | None:
        """The listening control socket (None before it is bound, and after it is closed)."""
        sock = self._control_sock
        return sock if sock is not None and sock.fileno() >= 0 else None

    def stop_listening(self) -> None:
        """Take no new connections; the open ones and their sessions go on to their end (a
        worker handing over to a new server: the kernel sends new connections to the other
        sockets on the port)."""
        if self._server is not None:
            self._server.close()  # closes the listening socket, not the connections
        elif self._control_sock is not None:
            self._control_sock.close()

    @property
    def connections(self) -> int:
        """Open control connections."""
        return len(self._connections)

    async def stop(self) -> None:
        """Stop taking calls, finish this front end's recordings (``shutdown``), close the
        control connections."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        elif self._control_sock is not None:
            self._control_sock.close()
        for rec in list(self.sessions.values()):
            self.engine.spawn_finish(rec, SHUTDOWN)
        waits = [rec.wait_ended() for rec in list(self.sessions.values())]
        if waits:
            await asyncio.gather(*waits)
        if self._read_task is not None:
            self._read_task.cancel()
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
        self.media.close()
        logger.info("phone control stopped")

    # -- control connections -------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # On a dual-stack socket an IPv4 phone is ::ffff:a.b.c.d; its RTP comes from a.b.c.d.
        peer = plain_sockaddr(writer.get_extra_info("peername") or ("?", 0))
        source = peer[0]
        if not self._allow.allows(source):
            await self._answer_forbidden(reader, writer, source)
            return
        settings = self.settings
        if self._per_source[source] >= settings.max_connections_per_source:
            # Closed before it counts against max_connections: one host cannot lock every
            # phone out by opening connections and sending nothing.
            self._refuse_connection(
                source,
                "too_many_connections",
                f"{self._per_source[source]} control connections open from it already",
            )
            writer.close()
            return
        held = len(self._connections) - self._forbidden_answers
        if held >= settings.max_connections:
            self._refuse_connection(source, "max_connections", f"{held} control connections open")
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._writers.add(writer)
        self._per_source[source] += 1
        try:
            await self._serve_allowed(reader, writer, peer)
        finally:
            self._per_source[source] -= 1
            if self._per_source[source] <= 0:
                del self._per_source[source]
            self._writers.discard(writer)
            self._connections.discard(task)

    def _refuse_connection(self, source: str, reason: str, detail: str) -> None:
        self.refusals.refused(source, reason, detail, asyncio.get_running_loop().time())
        self.engine.admission.refuse_connection("control", reason)

    async def _answer_forbidden(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, source: str
    ) -> None:
        """A connection from an address not in ``control_allow``: its start is answered
        ``failed&reason=forbidden`` (the phone shows why in its log, and does not retry as it
        would after a reset), then it is closed."""
        self._refuse_connection(source, "forbidden", "not in control_allow")
        if self._forbidden_answers >= MAX_FORBIDDEN_ANSWERS or self._closing:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        # Tracked with the others so that stop() closes it too, but not counted against
        # max_connections (it ends within seconds, and there are few at once).
        self._connections.add(task)
        self._writers.add(writer)
        self._forbidden_answers += 1
        loop = asyncio.get_running_loop()
        try:
            conn = ControlConnection(
                max_message_bytes=self.settings.max_message_bytes,
                message_idle=self.settings.message_idle,
            )
            try:
                data = await asyncio.wait_for(reader.read(65536), FORBIDDEN_WAIT)
            except (TimeoutError, ConnectionError, OSError):
                data = b""
            if data:
                conn.receive_data(data, loop.time())
            # One segment is all a phone sends before it waits for the answer.
            conn.receive_eof(loop.time())
            answers = b""
            while (event := conn.next_event(loop.time())) is not None:
                if isinstance(event, StartRequest):
                    self.engine.admission.refuse("forbidden")
                    answers += conn.reject_start(event, reason="forbidden")
                elif isinstance(event, StopRequest):
                    answers += conn.refuse_stop(event, reason="forbidden")
            if answers:
                writer.write(answers)
                await writer.drain()
            await _linger_close(reader, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            self._forbidden_answers -= 1
            self._writers.discard(writer)
            self._connections.discard(task)
            writer.close()

    async def _serve_allowed(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Any
    ) -> None:
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
        stopped_at: float | None = None  # when the last stop here was answered
        bad_in_a_row = 0
        try:
            while not conn.broken:
                now = loop.time()
                deadline = conn.deadline()
                expiry: float | None
                if conn.holds_sessions:
                    expiry = None  # a phone is silent for the whole call
                elif stopped_at is not None:
                    expiry = stopped_at + self.settings.close_after_stop
                else:
                    expiry = last_message + self.settings.connection_idle_timeout
                wake = min((t for t in (deadline, expiry) if t is not None), default=None)
                try:
                    data = await asyncio.wait_for(
                        reader.read(65536), None if wake is None else max(0.0, wake - now)
                    )
                except TimeoutError:
                    if expiry is not None and loop.time() >= expiry:
                        if stopped_at is None:
                            logger.info("closing idle control connection from %s:%s", *peer[:2])
                        await _linger_close(reader, writer)
                        return
                    data = None
                except (ConnectionError, OSError):
                    # A reset: what arrived before it is still a whole message to answer
                    # (the answer will not get through, but the stop is the phone's).
                    conn.receive_eof(loop.time())
                    data = None
                if data is not None:
                    if data:
                        conn.receive_data(data, loop.time())
                    else:
                        # FIN or a half-close ends the pending message: a phone that sends
                        # its stop and closes at once gets its stop honoured and answered.
                        conn.receive_eof(loop.time())
                while (event := conn.next_event(loop.time())) is not None:
                    last_message = loop.time()
                    answer = await self._handle(conn, event, writer, peer)
                    if isinstance(event, StopRequest) and not conn.holds_sessions:
                        stopped_at = loop.time()
                    elif not isinstance(event, BadRequest):
                        stopped_at = None
                    if answer and not writer.is_closing():
                        try:
                            writer.write(answer)
                            await writer.drain()
                        except (ConnectionError, OSError):
                            pass  # the peer is gone; its sessions end below
                    if isinstance(event, BadRequest) and not event.unknown_command:
                        bad_in_a_row += 1
                    elif not isinstance(event, BadRequest):
                        bad_in_a_row = 0
                    if (
                        isinstance(event, BadRequest)
                        and (event.fatal or bad_in_a_row >= self.settings.max_bad_requests)
                        # Bad input never ends a call: a connection holding one stays.
                        and not conn.holds_sessions
                    ):
                        await _linger_close(reader, writer)
                        return
                if conn.at_eof:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            for session_id in conn.connection_lost():
                rec = self.sessions.get(_key(peer, conn, session_id))
                if rec is not None:
                    self.engine.spawn_finish(rec, CONNECTION_LOST)
            writer.close()

    async def _handle(
        self,
        conn: ControlConnection,
        event: StartRequest | StopRequest | BadRequest,
        writer: asyncio.StreamWriter,
        peer: Any,
    ) -> bytes:
        if isinstance(event, BadRequest):
            if event.unknown_command:
                logger.info("unknown control command from %s: %s", peer[0], event.detail)
            else:
                logger.warning("refused control message from %s: %s", peer[0], event.detail)
            return event.answer
        key = _key(peer, conn, event.session_id)
        if isinstance(event, StartRequest):
            refusal = self._refusal(conn, event, peer)
            if refusal is not None:
                reason, detail = refusal
                source = str(peer[0])
                detail = f"start {event.session_id!r}: {detail}"
                self.refusals.refused(source, reason, detail, asyncio.get_running_loop().time())
                self.engine.admission.refuse(reason)
                return conn.reject_start(event, reason=reason)
            try:
                # The address the phone reached us on, in its own family: an IPv4 phone on a
                # dual-stack listener gets a.b.c.d, which it can send RTP to.
                server_ip = self.settings.advertised_address or plain_ip(
                    str(writer.get_extra_info("sockname")[0])
                )
                rec = await self._open_session(key, conn, event, peer, writer)
            except (UnsupportedCodecError, ResourceError) as exc:
                logger.warning("refused start %s from %s: %s", event.session_id, peer[0], exc)
                self.engine.admission.refuse(exc.reason)
                return conn.reject_start(event, reason=exc.reason)
            except Exception:
                logger.exception("could not open session %s from %s", event.session_id, peer[0])
                self.engine.admission.refuse("internal")
                return conn.reject_start(event, reason="internal")
            return conn.accept_start(event, server=server_ip, port=rec.source.media_port)
        stop_fields = dict(event.fields)
        if event.was_recording:
            mine = self.sessions.get(key)
            if mine is not None:
                await self.engine.finish(mine, PHONE_STOP, stop_fields=stop_fields)
        elif event.state_before is None:
            # Not this connection's: the phone may have opened a new one for its stop.
            elsewhere = self._find_by_phone(peer, event)
            if elsewhere is None:
                logger.warning("stop for unknown id %r from %s", event.session_id, peer[0])
                return conn.refuse_stop(event, reason="unknown_id")
            info = self._session_info.get(elsewhere)
            theirs = self.sessions.get(elsewhere)
            if info is not None:
                info.conn.stopped_elsewhere(event.session_id)
            if theirs is not None:
                await self.engine.finish(theirs, PHONE_STOP, stop_fields=stop_fields)
            if info is not None and not info.conn.holds_sessions:
                # Its connection owes the phone nothing more: the phone left it for this one.
                info.writer.close()
        return conn.answer_stop(event)

    def _refusal(
        self, conn: ControlConnection, event: StartRequest, peer: Any
    ) -> tuple[str, str] | None:
        """Why this start is refused before anything is opened: (reason, detail), or None."""
        device = event.fields.get("device", "")
        if not self._allow_devices.allows(device):
            return "forbidden", f"device {device!r} is not in control_allow_devices"
        # The core counts this start among the connection's open sessions already.
        open_here = len(conn.active_sessions)
        if open_here > self.settings.max_sessions_per_connection:
            return (
                "too_many_sessions",
                f"{open_here - 1} sessions open on its connection "
                f"(max_sessions_per_connection={self.settings.max_sessions_per_connection})",
            )
        if event.session_id:
            # The same phone (address and device) may not record one id twice at once, on
            # this connection (the core refuses that) or on another.
            elsewhere = self._by_phone.get((str(peer[0]), device, event.session_id))
            if elsewhere is not None and elsewhere in self.sessions:
                return "duplicate_id", "a session with this id is open on another connection"
        return None

    def _find_by_phone(self, peer: Any, event: StopRequest) -> SessionKey | None:
        # Always from the phone's own address: an id can be a guessable number, and a MAC is
        # printed on the phone, so neither alone may end someone's call. The device tells
        # apart phones behind one NAT address.
        device = event.fields.get("device", "")
        key = self._by_phone.get((str(peer[0]), device, event.session_id))
        return key if key is not None and key in self.sessions else None

    # -- sessions ------------------------------------------------------------------------

    async def _open_session(
        self,
        key: SessionKey,
        conn: ControlConnection,
        request: StartRequest,
        peer: Any,
        writer: asyncio.StreamWriter,
    ) -> Recording[PhoneSource]:
        if self._closing:
            raise ResourceError("server is shutting down", reason="busy")
        fields = dict(request.fields)
        codec = get_codec(fields.get("codec", ""))
        settings = self.settings
        spec = RecordingSpec(
            source="server",
            session_id=request.session_id,
            codec=codec,
            device=fields.get("device", ""),
            direction=_direction(fields.get("dir", "")),
            local_number=fields.get("local_number", ""),
            local_name=fields.get("local_name", ""),
            remote_number=fields.get("remote_number", ""),
            remote_name=fields.get("remote_name", ""),
            peer_address=str(peer[0]),
            peer_port=int(peer[1]),
            name_fields={k: fields.get(k, "") for k in NAME_FIELDS},
            extra={"start": _extra_fields(fields)},
        )

        latching = settings.media_latch and not settings.accept_foreign_media
        media_host = settings.media_host
        if latching and media_host in WILDCARD_HOSTS:
            # Where the phone reached us is where its RTP will come (server= of the answer).
            media_host = plain_ip(str(writer.get_extra_info("sockname")[0]))

        def make_source() -> PhoneSource:
            stream = MediaStream(
                payload_type=codec.payload_type,
                clock_rate=codec.clock_rate,
                timestamp_units=codec.timestamp_units,
                peer_ip=str(peer[0]),
                accept_foreign=settings.accept_foreign_media,
                reorder_window=settings.reorder_window,
                max_gap=settings.max_gap_seconds,
                # The phone's start names the codec, not its RTP payload type when it has no
                # static one (G.726): the stream finds it.
                dynamic_payload_type=getattr(codec, "dynamic_payload_type", False),
                other_clock_scale=max(1, codec.sample_rate // codec.clock_rate),
            )
            return PhoneSource(
                codec=codec,
                stream=stream,
                sock=self.ports.bind(media_host),
                ports=self.ports,
                receiver=self.media,
                latch=(
                    MediaLatch(str(peer[0]), relatch_after=settings.media_relatch_after)
                    if latching
                    else None
                ),
            )

        rec = await self.engine.open(spec, make_source)
        source = rec.source
        session_id = request.session_id  # not the request: it is not kept for the whole call
        # From now on the control core knows the session, and hears when it ends.
        source.on_close = lambda: self._ended(key, conn, session_id, source)
        self.sessions[key] = rec
        source.reading_since = asyncio.get_running_loop().time()
        # An empty id cannot tell one phone's sessions apart on other connections.
        phone_keys: tuple[PhoneKey, ...] = ()
        if session_id:
            phone_keys = ((str(peer[0]), "", session_id),)
            if spec.device:
                phone_keys += ((str(peer[0]), spec.device, session_id),)
        self._session_info[key] = _Session(rec, conn, writer, phone_keys)
        for phone_key in phone_keys:
            self._by_phone[phone_key] = key
        source.start_reading()
        return rec

    def _ended(
        self,
        key: SessionKey,
        conn: ControlConnection,
        session_id: str,
        source: PhoneSource,
    ) -> None:
        """A session's source was closed (however its recording ended): forget it, and tell
        the control core when it was not the phone that ended it."""
        rec = self.sessions.get(key)
        if rec is not None and rec.source is source:
            del self.sessions[key]
            info = self._session_info.pop(key, None)
            for phone_key in info.phone_keys if info is not None else ():
                if self._by_phone.get(phone_key) == key:
                    del self._by_phone[phone_key]
        conn.end_session(session_id)

    # -- media ---------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        """Read all media sockets together every ``media_read_interval`` seconds."""
        loop = asyncio.get_running_loop()
        interval = self.settings.media_read_interval
        read = self.media.read
        next_check = loop.time() + RTP_TIMEOUT_CHECK
        next_latch = loop.time() + LATCH_CHECK
        behind = False
        while True:
            # Behind (a backlog left by a read that ran out of time): one turn of the loop for
            # the control connections and the ticks, then on; else the next batch.
            await asyncio.sleep(0 if behind else interval)
            now = loop.time()
            try:
                _count, behind = read(now, budget=READ_BUDGET)
            except Exception:
                # A bug in one stream must not stop the recording of every other call.
                logger.exception("reading media sockets failed")
                behind = False
            if now >= next_latch:
                next_latch = now + LATCH_CHECK
                for rec in list(self.sessions.values()):
                    rec.source.check_latch(now)
            if now >= next_check:
                next_check = now + RTP_TIMEOUT_CHECK
                self._end_silent_sessions(now)
                self.refusals.sweep(now)

    def _end_silent_sessions(self, now: float) -> None:
        """Finish sessions whose phone sent no RTP for ``rtp_timeout`` (or never did): a
        phone that stopped streaming but keeps its connection, or a peer holding ports."""
        timeout = self.settings.rtp_timeout
        if not timeout:
            return
        for rec in list(self.sessions.values()):
            since = rec.source.idle_since()
            if since is not None and now - since >= timeout and not rec.finishing:
                rec.log.warning("no RTP for %.0f s; ending the recording", now - since)
                self.engine.spawn_finish(rec, RTP_TIMEOUT)


def _key(peer: Any, conn: ControlConnection, session_id: str) -> SessionKey:
    return (str(peer[0]), str(id(conn)), session_id)


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
