"""Sans-I/O core of one TCP control connection: bytes and time in, events and bytes out.

The driver calls :meth:`ControlConnection.receive_data` with what the socket read and the
current time, then :meth:`next_event` until it returns ``None``; it answers each request with
one of the ``answer_*`` methods and sends the bytes they return. When bytes sit in the buffer
with no terminator, :meth:`deadline` says when to call :meth:`next_event` again: phones send
no terminator at all, so a quiet buffer *is* a whole message.
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
    #: False when the session had already been ended by us (answered success all the same).
    was_recording: bool

    @property
    def fields(self) -> MappingProxyType[str, str]:
        return MappingProxyType(self.message.as_dict())


@dataclass(frozen=True, slots=True, kw_only=True)
class BadRequest:
    """A message we refuse. It has been answered already: send :attr:`answer`."""

    reason: str
    detail: str
    answer: bytes
    #: The framing is lost (oversized message): close the connection after the answer.
    fatal: bool = False


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

    # -- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        if self._broken:
            return
        self._buffer += data
        self._last_data_at = now

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
                self._broken = True
                size = len(self._buffer)
                self._buffer.clear()
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
            elif self._buffer and now >= self._last_data_at + self.message_idle:
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
            session_id = message.get("id")
            if not cmd:
                raise ControlProtocolError("control message has no cmd", reason="bad_request")
            if cmd not in (START_REQUEST, STOP_REQUEST):
                raise ControlProtocolError(f"unknown cmd {cmd!r}", reason="unknown_command")
            if not session_id:
                raise ControlProtocolError(f"{cmd} has no id", reason="bad_request")
            state = self._sessions.get(session_id)
            if cmd == START_REQUEST:
                self._sessions[session_id] = next_state(state, SessionEvent.START_REQUEST)
                return StartRequest(session_id=session_id, message=message, terminator=terminator)
            self._sessions[session_id] = next_state(state, SessionEvent.STOP_REQUEST)
            return StopRequest(
                session_id=session_id,
                message=message,
                terminator=terminator,
                was_recording=state is SessionState.RECORDING,
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
    ) -> BadRequest:
        cmd = message.cmd if message else ""
        response = STOP_RESPONSE if cmd == STOP_REQUEST else START_RESPONSE
        pairs: list[tuple[str, str | int]] = [("cmd", response)]
        if message is not None:
            pairs.append(("id", message.get("id")))
        pairs += [("result", "failed"), ("reason", exc.reason)]
        answer = ControlMessage.build(*pairs).serialize() + terminator
        return BadRequest(reason=exc.reason, detail=str(exc), answer=answer, fatal=fatal)

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
        return (
            ControlMessage.build(
                ("cmd", START_RESPONSE),
                ("id", request.session_id),
                ("result", "failed"),
                ("reason", reason),
            ).serialize()
            + request.terminator
        )

    def answer_stop(self, request: StopRequest) -> bytes:
        return (
            ControlMessage.build(
                ("cmd", STOP_RESPONSE), ("id", request.session_id), ("result", "success")
            ).serialize()
            + request.terminator
        )

    def end_session(self, session_id: str) -> None:
        """The server ended a session by itself (max duration, shutdown)."""
        if session_id in self._sessions:
            self._transition(session_id, SessionEvent.END)

    def connection_lost(self) -> list[str]:
        """The socket is gone: every session still open ends. Returns their ids."""
        open_ids = [sid for sid, st in self._sessions.items() if st is not SessionState.CLOSED]
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
        return [s for s, st in self._sessions.items() if st is not SessionState.CLOSED]

    @property
    def broken(self) -> bool:
        return self._broken
