"""Sans-I/O core of one TCP control connection: bytes and time in, events and bytes out.

The driver calls :meth:`ControlConnection.receive_data` with what the socket read and the
current time, then :meth:`next_event` until it returns ``None``; it answers each request with
one of the ``answer_*`` methods and sends the bytes they return. When bytes sit in the buffer
with no terminator, :meth:`deadline` says when to call :meth:`next_event` again: phones send
no terminator at all, so a quiet buffer *is* a whole message, and so is what is left when the
peer closes or half-closes (:meth:`receive_eof`): a stop followed at once by FIN is answered.

Nothing here ends a recording on its own: a refused or unknown message is answered and the
connection goes on; :attr:`ControlConnection.holds_sessions` tells the driver whether closing
the connection would cut a call short.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from callrec.control.message import MAX_FIELDS, ControlMessage
from callrec.control.state import SessionEvent, SessionState, next_state
from callrec.exceptions import ControlProtocolError

START_REQUEST: Final = "RecordStartRequest"
STOP_REQUEST: Final = "RecordStopRequest"
START_RESPONSE: Final = "RecordStartResponse"
STOP_RESPONSE: Final = "RecordStopResponse"

#: Terminators we accept; ``\r\n`` must be tried before ``\n`` so the answer uses the same one.
_TERMINATOR = re.compile(rb"\r\n|\n|\0")

#: Closed sessions remembered per connection, so a late stop is answered success.
_MAX_CLOSED = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class StartRequest:
    """``cmd=RecordStartRequest``: the phone wants a UDP port to stream a call to."""

    session_id: str
    message: ControlMessage
    terminator: bytes

    @property
    def fields(self) -> MappingProxyType[str, str]:
        return MappingProxyType(self.message.as_dict())


@dataclass(frozen=True, slots=True, kw_only=True)
class StopRequest:
    """``cmd=RecordStopRequest``: the call (or the recording) ended on the phone."""

    session_id: str
    message: ControlMessage
    terminator: bytes
    #: The session's state on this connection before the stop: RECORDING for the usual stop,
    #: ENDED or CLOSED when we had ended it already (answered success all the same), None
    #: when this connection never saw the id (a stop on a new connection: the driver looks
    #: the phone's session up elsewhere, and answers :meth:`ControlConnection.refuse_stop`
    #: if there is none).
    state_before: SessionState | None

    @property
    def was_recording(self) -> bool:
        return self.state_before is SessionState.RECORDING

    @property
    def fields(self) -> MappingProxyType[str, str]:
        return MappingProxyType(self.message.as_dict())


@dataclass(frozen=True, slots=True, kw_only=True)
class BadRequest:
    """A message we refuse. It has been answered already: send :attr:`answer`."""

    reason: str
    detail: str
    answer: bytes
    #: The framing was lost (an oversized message, skipped up to the next terminator or
    #: pause): a connection holding no call is closed after the answer.
    fatal: bool = False
    #: A command this server does not know (a keep-alive, a firmware extension): answered,
    #: never counted against the connection.
    unknown_command: bool = False


Event = StartRequest | StopRequest | BadRequest


@dataclass(slots=True)
class ControlConnection:
    """Protocol state of one control connection."""

    max_message_bytes: int = 8192
    message_idle: float = 0.03
    max_fields: int = MAX_FIELDS
    _buffer: bytearray = field(default_factory=bytearray)
    _last_data_at: float = 0.0
    _sessions: dict[str, SessionState] = field(default_factory=dict)
    _broken: bool = False
    _eof: bool = False
    #: After an oversized message: bytes are dropped up to the next terminator or pause.
    _skipping: bool = False

    # -- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        if self._broken or self._eof:
            return
        if self._skipping:
            if now >= self._last_data_at + self.message_idle:
                self._skipping = False  # a pause ended the oversized message
            else:
                match = _TERMINATOR.search(data)
                self._last_data_at = now
                if match is None:
                    return
                self._skipping = False
                data = data[match.end() :]
        self._buffer += data
        self._last_data_at = now

    def receive_eof(self, now: float) -> None:
        """The peer closed or half-closed: what is buffered is a whole message now."""
        if self._skipping:
            self._skipping = False
            self._buffer.clear()
        self._eof = True
        self._last_data_at = now - self.message_idle

    def deadline(self) -> float | None:
        """When an unterminated buffer becomes a message, or None if nothing is waiting."""
        if self._buffer and not self._broken:
            return self._last_data_at + self.message_idle
        return None

    def next_event(self, now: float) -> Event | None:
        while not self._broken:
            match = _TERMINATOR.search(self._buffer, 0, self.max_message_bytes + 2)
            if match is not None:
                body = bytes(self._buffer[: match.start()])
                terminator = bytes(match.group())  # before the buffer it points into changes
                del self._buffer[: match.end()]
            elif len(self._buffer) > self.max_message_bytes:
                size = len(self._buffer)
                self._buffer.clear()
                # Drop the rest of it as it comes, then read on: a call on this connection
                # must not end because one message was too long.
                self._skipping = not self._eof
                return self._refuse(
                    None,
                    ControlProtocolError(
                        f"control message longer than {self.max_message_bytes} bytes "
                        f"({size} without a terminator)",
                        reason="too_large",
                    ),
                    b"",
                    fatal=True,
                )
            elif self._buffer and (self._eof or now >= self._last_data_at + self.message_idle):
                body = bytes(self._buffer)
                self._buffer.clear()
                terminator = b""
            else:
                return None
            if not body.strip(b" \t\r\n\0"):
                continue  # blank line between messages
            return self._handle(body, terminator)
        return None

    def _handle(self, body: bytes, terminator: bytes) -> Event:
        message: ControlMessage | None = None
        try:
            message = ControlMessage.parse(body, max_fields=self.max_fields)
            cmd = message.cmd
            if not cmd:
                raise ControlProtocolError("control message has no cmd", reason="bad_request")
            if cmd not in (START_REQUEST, STOP_REQUEST):
                return self._refuse(
                    message,
                    ControlProtocolError(f"unknown cmd {cmd!r}", reason="unknown_command"),
                    terminator,
                    unknown_command=True,
                )
            if "id" not in message:
                raise ControlProtocolError(f"{cmd} has no id field", reason="bad_request")
            # An empty id is an id: the guide gives one TCP connection to each recording, so
            # the connection alone tells the session apart (docs/protocol.md).
            session_id = message.get("id")
            state = self._sessions.get(session_id)
            if cmd == START_REQUEST:
                self._sessions[session_id] = next_state(state, SessionEvent.START_REQUEST)
                return StartRequest(session_id=session_id, message=message, terminator=terminator)
            if state is not None:
                self._sessions[session_id] = next_state(state, SessionEvent.STOP_REQUEST)
            return StopRequest(
                session_id=session_id,
                message=message,
                terminator=terminator,
                state_before=state,
            )
        except ControlProtocolError as exc:
            return self._refuse(message, exc, terminator)

    def _refuse(
        self,
        message: ControlMessage | None,
        exc: ControlProtocolError,
        terminator: bytes,
        *,
        fatal: bool = False,
        unknown_command: bool = False,
    ) -> BadRequest:
        cmd = message.cmd if message else ""
        session_id = message.get("id") if message is not None else ""
        if unknown_command:
            # The answer a phone waiting for "<Name>Response" would recognise as a refusal.
            base = cmd[: -len("Request")] if cmd.endswith("Request") else cmd
            answer = _failure(f"{base}Response", session_id, exc.reason, terminator)
        elif cmd == STOP_REQUEST:
            answer = _failure(STOP_RESPONSE, session_id, exc.reason, terminator)
        else:
            # Whatever it was, a phone waiting for anything waits for a start answer.
            answer = _start_failure(session_id, exc.reason, terminator)
        return BadRequest(
            reason=exc.reason,
            detail=str(exc),
            answer=answer,
            fatal=fatal,
            unknown_command=unknown_command,
        )

    # -- answers -------------------------------------------------------------------------

    def accept_start(self, request: StartRequest, *, server: str, port: int) -> bytes:
        self._transition(request.session_id, SessionEvent.ACCEPT)
        return (
            ControlMessage.build(
                ("cmd", START_RESPONSE),
                ("id", request.session_id),
                ("result", "success"),
                ("reason", ""),
                ("server", server),
                ("port", port),
            ).serialize()
            + request.terminator
        )

    def reject_start(self, request: StartRequest, *, reason: str) -> bytes:
        self._transition(request.session_id, SessionEvent.REJECT)
        return _start_failure(request.session_id, reason, request.terminator)

    def answer_stop(self, request: StopRequest) -> bytes:
        return (
            ControlMessage.build(
                ("cmd", STOP_RESPONSE), ("id", request.session_id), ("result", "success")
            ).serialize()
            + request.terminator
        )

    def refuse_stop(self, request: StopRequest, *, reason: str) -> bytes:
        """No session of the phone has this id, on this connection or any other."""
        return _failure(STOP_RESPONSE, request.session_id, reason, request.terminator)

    def end_session(self, session_id: str) -> None:
        """The server ended a session by itself (max duration, shutdown, an error)."""
        if session_id in self._sessions:
            self._transition(session_id, SessionEvent.END)

    def stopped_elsewhere(self, session_id: str) -> None:
        """The phone stopped this session on another connection: nothing more is owed here."""
        if session_id in self._sessions:
            self._sessions[session_id] = SessionState.CLOSED

    def connection_lost(self) -> list[str]:
        """The socket is gone: every session still recording ends. Returns their ids."""
        open_ids = [
            sid
            for sid, st in self._sessions.items()
            if st in (SessionState.STARTING, SessionState.RECORDING)
        ]
        for sid in open_ids:
            self._transition(sid, SessionEvent.END)
        self._broken = True
        return open_ids

    def _transition(self, session_id: str, event: SessionEvent) -> None:
        self._sessions[session_id] = next_state(self._sessions.get(session_id), event)
        if self._sessions[session_id] is SessionState.CLOSED:
            closed = [s for s, st in self._sessions.items() if st is SessionState.CLOSED]
            for sid in closed[: max(0, len(closed) - _MAX_CLOSED)]:
                del self._sessions[sid]

    # -- inspection ----------------------------------------------------------------------

    def session_state(self, session_id: str) -> SessionState | None:
        return self._sessions.get(session_id)

    @property
    def active_sessions(self) -> list[str]:
        """Sessions being recorded (or about to be)."""
        return [
            s
            for s, st in self._sessions.items()
            if st in (SessionState.STARTING, SessionState.RECORDING)
        ]

    @property
    def holds_sessions(self) -> bool:
        """Whether the phone has a session open here, as the phone sees it: recording, or
        ended by us with the phone's stop still to come. Such a connection is never closed
        for idleness or bad input: the phone is silent for the whole call."""
        return any(st is not SessionState.CLOSED for st in self._sessions.values())

    @property
    def broken(self) -> bool:
        return self._broken

    @property
    def at_eof(self) -> bool:
        """The peer closed or half-closed its side: once the events are taken, we are done."""
        return self._eof


def _start_failure(session_id: str, reason: str, terminator: bytes) -> bytes:
    # The vendor template's fields, ``server`` and ``port`` empty: phones parse by position.
    return (
        ControlMessage.build(
            ("cmd", START_RESPONSE),
            ("id", session_id),
            ("result", "failed"),
            ("reason", reason),
            ("server", ""),
            ("port", ""),
        ).serialize()
        + terminator
    )


def _failure(cmd: str, session_id: str, reason: str, terminator: bytes) -> bytes:
    return (
        ControlMessage.build(
            ("cmd", cmd), ("id", session_id), ("result", "failed"), ("reason", reason)
        ).serialize()
        + terminator
    )
