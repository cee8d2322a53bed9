"""Life of one recording session on a control connection, as a transition table."""

from __future__ import annotations

import enum

from callrec.exceptions import ControlProtocolError


class SessionState(enum.Enum):
    STARTING = "starting"  # start request seen, the server has not answered yet
    RECORDING = "recording"  # answered success: RTP is expected
    #: Ended by us (max duration, an error) while the phone goes on believing it records:
    #: its stop is still to come, and is answered success whenever it comes.
    ENDED = "ended"
    CLOSED = "closed"  # refused, or stopped by the phone


class SessionEvent(enum.Enum):
    START_REQUEST = "start_request"
    ACCEPT = "accept"
    REJECT = "reject"
    STOP_REQUEST = "stop_request"
    END = "end"  # ended by us: connection lost, max duration, shutdown


_S = SessionState
_E = SessionEvent

#: (state or None for an unknown id, event) -> next state.
TRANSITIONS: dict[tuple[SessionState | None, SessionEvent], SessionState] = {
    (None, _E.START_REQUEST): _S.STARTING,
    (_S.CLOSED, _E.START_REQUEST): _S.STARTING,  # an id may be reused once its session ended
    (_S.STARTING, _E.ACCEPT): _S.RECORDING,
    (_S.STARTING, _E.REJECT): _S.CLOSED,
    (_S.STARTING, _E.END): _S.CLOSED,
    (_S.RECORDING, _E.STOP_REQUEST): _S.CLOSED,
    (_S.RECORDING, _E.END): _S.ENDED,
    # A phone keeps streaming after we ended its session (max duration, say) and stops
    # later: that stop is answered success, not treated as an error.
    (_S.ENDED, _E.STOP_REQUEST): _S.CLOSED,
    (_S.ENDED, _E.END): _S.ENDED,
    (_S.ENDED, _E.START_REQUEST): _S.STARTING,
    (_S.CLOSED, _E.STOP_REQUEST): _S.CLOSED,
    (_S.CLOSED, _E.END): _S.CLOSED,
}

#: The reason word a peer gets for a request that has no transition.
REFUSALS: dict[tuple[SessionState | None, SessionEvent], str] = {
    (_S.STARTING, _E.START_REQUEST): "duplicate_id",
    (_S.RECORDING, _E.START_REQUEST): "duplicate_id",
    (None, _E.STOP_REQUEST): "unknown_id",
    (_S.STARTING, _E.STOP_REQUEST): "unknown_id",
}


def next_state(state: SessionState | None, event: SessionEvent) -> SessionState:
    """The state after ``event``; ControlProtocolError carrying the reason word if not allowed."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        reason = REFUSALS.get((state, event), "bad_request")
        where = state.value if state else "unknown"
        raise ControlProtocolError(
            f"{event.value} not allowed for a session that is {where}", reason=reason
        ) from None
