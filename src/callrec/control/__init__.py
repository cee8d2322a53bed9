"""The TCP control protocol (``cmd=RecordStartRequest&...``), without I/O."""

from callrec.control.connection import (
    START_REQUEST,
    START_RESPONSE,
    STOP_REQUEST,
    STOP_RESPONSE,
    BadRequest,
    ControlConnection,
    Event,
    StartRequest,
    StopRequest,
)
from callrec.control.message import ControlMessage
from callrec.control.state import SessionEvent, SessionState

__all__ = [
    "START_REQUEST",
    "START_RESPONSE",
    "STOP_REQUEST",
    "STOP_RESPONSE",
    "BadRequest",
    "ControlConnection",
    "ControlMessage",
    "Event",
    "SessionEvent",
    "SessionState",
    "StartRequest",
    "StopRequest",
]
