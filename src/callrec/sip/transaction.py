"""SIP transactions (RFC 3261 section 17, with RFC 6026's Accepted state), without I/O.

Four machines, each a transition table ``(state, input) -> state`` in the manner of h11's
``_state.py``: a pair missing from its table is absorbed (a late retransmission, a stray
response) and changes nothing. What a transition *does* (send, retransmit, hand a response to
the transaction user, arm timers) is decided by one small method per machine from the old
state, the input and the new state.

Nothing here reads a clock or a socket: every method takes ``now`` and returns the
:class:`Send`, :class:`Deliver` and :class:`TimedOut` outputs for the caller to carry out;
``next_deadline()`` says when :meth:`on_timer` wants to be called next. Over a reliable
transport (TCP) the retransmission timers are never armed and the linger timers are zero,
as section 17 prescribes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from callrec.sip.headers import NameAddr
from callrec.sip.message import SipRequest, SipResponse, canonical_name, with_body
from callrec.sip.peer import Peer

#: RTT estimate, longest retransmit interval, and how long the network keeps a message.
T1: Final = 0.5
T2: Final = 4.0
T4: Final = 5.0
#: Timers B, F, H, J, L, M: how long a transaction waits for a response, ACK or the end.
TIMEOUT: Final = 64 * T1
#: Timer D: how long a client INVITE transaction absorbs retransmitted failures (>= 32 s).
TIMER_D: Final = 32.0
#: Timer C (RFC 3261 16.6 item 11): a callee that rings this long without answering is given
#: up on (the caller gets 408, the callee a CANCEL); each provisional restarts it.
TIMER_C: Final = 180.0


class State(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Input(enum.Enum):
    RECV_1XX = "1xx received"
    RECV_2XX = "2xx received"
    RECV_FINAL = "final (non-2xx) received"
    RECV_REQUEST = "request retransmitted"
    RECV_ACK = "ACK received"
    SEND_1XX = "1xx sent"
    SEND_2XX = "2xx sent"
    SEND_FINAL = "final (non-2xx) sent"
    TIMER_RETRANSMIT = "retransmit timer (A, E, G)"
    TIMER_TIMEOUT = "timeout timer (B, F, H)"
    TIMER_END = "linger timer (D, I, J, K, L, M)"
    TRANSPORT_ERROR = "transport error"


S, I = State, Input  # noqa: E741 - the tables read better short

INVITE_CLIENT: Final[dict[tuple[State, Input], State]] = {
    (S.CALLING, I.RECV_1XX): S.PROCEEDING,
    (S.CALLING, I.RECV_2XX): S.ACCEPTED,
    (S.CALLING, I.RECV_FINAL): S.COMPLETED,
    (S.CALLING, I.TIMER_RETRANSMIT): S.CALLING,
    (S.CALLING, I.TIMER_TIMEOUT): S.TERMINATED,
    (S.CALLING, I.TRANSPORT_ERROR): S.TERMINATED,
    (S.PROCEEDING, I.RECV_1XX): S.PROCEEDING,
    (S.PROCEEDING, I.RECV_2XX): S.ACCEPTED,
    (S.PROCEEDING, I.RECV_FINAL): S.COMPLETED,
    (S.PROCEEDING, I.TIMER_TIMEOUT): S.PROCEEDING,  # Timer C: the TU cancels
    (S.PROCEEDING, I.TRANSPORT_ERROR): S.TERMINATED,
    (S.COMPLETED, I.RECV_FINAL): S.COMPLETED,
    (S.COMPLETED, I.TIMER_END): S.TERMINATED,
    (S.ACCEPTED, I.RECV_2XX): S.ACCEPTED,
    (S.ACCEPTED, I.TIMER_END): S.TERMINATED,
}

NON_INVITE_CLIENT: Final[dict[tuple[State, Input], State]] = {
    (S.TRYING, I.RECV_1XX): S.PROCEEDING,
    (S.TRYING, I.RECV_FINAL): S.COMPLETED,
    (S.TRYING, I.TIMER_RETRANSMIT): S.TRYING,
    (S.TRYING, I.TIMER_TIMEOUT): S.TERMINATED,
    (S.TRYING, I.TRANSPORT_ERROR): S.TERMINATED,
    (S.PROCEEDING, I.RECV_1XX): S.PROCEEDING,
    (S.PROCEEDING, I.RECV_FINAL): S.COMPLETED,
    (S.PROCEEDING, I.TIMER_RETRANSMIT): S.PROCEEDING,
    (S.PROCEEDING, I.TIMER_TIMEOUT): S.TERMINATED,
    (S.PROCEEDING, I.TRANSPORT_ERROR): S.TERMINATED,
    (S.COMPLETED, I.RECV_FINAL): S.COMPLETED,
    (S.COMPLETED, I.TIMER_END): S.TERMINATED,
}

INVITE_SERVER: Final[dict[tuple[State, Input], State]] = {
    (S.PROCEEDING, I.RECV_REQUEST): S.PROCEEDING,
    (S.PROCEEDING, I.SEND_1XX): S.PROCEEDING,
    (S.PROCEEDING, I.SEND_2XX): S.ACCEPTED,
    (S.PROCEEDING, I.SEND_FINAL): S.COMPLETED,
    (S.PROCEEDING, I.TRANSPORT_ERROR): S.TERMINATED,
    (S.COMPLETED, I.RECV_REQUEST): S.COMPLETED,
    (S.COMPLETED, I.TIMER_RETRANSMIT): S.COMPLETED,
    (S.COMPLETED, I.TIMER_TIMEOUT): S.TERMINATED,
    (S.COMPLETED, I.RECV_ACK): S.CONFIRMED,
    (S.COMPLETED, I.TRANSPORT_ERROR): S.TERMINATED,
    (S.CONFIRMED, I.RECV_ACK): S.CONFIRMED,
    (S.CONFIRMED, I.RECV_REQUEST): S.CONFIRMED,
    (S.CONFIRMED, I.TIMER_END): S.TERMINATED,
    (S.ACCEPTED, I.RECV_REQUEST): S.ACCEPTED,
    (S.ACCEPTED, I.SEND_2XX): S.ACCEPTED,
    (S.ACCEPTED, I.TIMER_RETRANSMIT): S.ACCEPTED,
    (S.ACCEPTED, I.RECV_ACK): S.ACCEPTED,
    (S.ACCEPTED, I.TIMER_TIMEOUT): S.TERMINATED,
    (S.ACCEPTED, I.TIMER_END): S.TERMINATED,
}

NON_INVITE_SERVER: Final[dict[tuple[State, Input], State]] = {
    (S.TRYING, I.RECV_REQUEST): S.TRYING,
    (S.TRYING, I.SEND_1XX): S.PROCEEDING,
    (S.TRYING, I.SEND_2XX): S.COMPLETED,
    (S.TRYING, I.SEND_FINAL): S.COMPLETED,
    (S.PROCEEDING, I.RECV_REQUEST): S.PROCEEDING,
    (S.PROCEEDING, I.SEND_1XX): S.PROCEEDING,
    (S.PROCEEDING, I.SEND_2XX): S.COMPLETED,
    (S.PROCEEDING, I.SEND_FINAL): S.COMPLETED,
    (S.COMPLETED, I.RECV_REQUEST): S.COMPLETED,
    (S.COMPLETED, I.TIMER_END): S.TERMINATED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """Put this message on the wire to ``peer``."""

    message: SipRequest | SipResponse
    peer: Peer


@dataclass(frozen=True, slots=True, kw_only=True)
class Deliver:
    """A response for the transaction user (client transactions only)."""

    response: SipResponse


@dataclass(frozen=True, slots=True, kw_only=True)
class TimedOut:
    """No response (client), no ACK (server), or the transport failed."""

    reason: str


Output = Send | Deliver | TimedOut


class _Transaction:
    table: dict[tuple[State, Input], State]

    def __init__(self, *, peer: Peer, state: State) -> None:
        self.peer = peer
        self.state = state
        self._timers: dict[Input, float] = {}
        self._interval = T1

    @property
    def terminated(self) -> bool:
        return self.state is S.TERMINATED

    def next_deadline(self) -> float | None:
        return min(self._timers.values(), default=None)

    def on_timer(self, now: float) -> list[Output]:
        out: list[Output] = []
        for timer, deadline in sorted(self._timers.items(), key=lambda item: item[1]):
            if deadline <= now and timer in self._timers:
                del self._timers[timer]
                out += self._fire(timer, None, now)
        return out

    def transport_error(self, now: float) -> list[Output]:
        return self._fire(I.TRANSPORT_ERROR, None, now)

    def _fire(
        self, inp: Input, message: SipRequest | SipResponse | None, now: float
    ) -> list[Output]:
        new = self.table.get((self.state, inp))
        if new is None:
            return []
        old, self.state = self.state, new
        out = self._effects(old, inp, new, message, now)
        if new is S.TERMINATED:
            self._timers.clear()
        return out

    def _effects(
        self,
        old: State,
        inp: Input,
        new: State,
        message: SipRequest | SipResponse | None,
        now: float,
    ) -> list[Output]:
        raise NotImplementedError

    def _arm(self, timer: Input, at: float) -> None:
        self._timers[timer] = at

    def _disarm(self, *timers: Input) -> None:
        for timer in timers:
            self._timers.pop(timer, None)

    def _linger(self, unreliable: float) -> float:
        return 0.0 if self.peer.reliable else unreliable


class ClientTransaction(_Transaction):
    """Sends a request and collects its responses (RFC 3261 17.1)."""

    def __init__(self, request: SipRequest, peer: Peer) -> None:
        invite = request.method == "INVITE"
        super().__init__(peer=peer, state=S.CALLING if invite else S.TRYING)
        self.table = INVITE_CLIENT if invite else NON_INVITE_CLIENT
        self.request = request
        self.invite = invite
        self.branch = request.top_via.branch or ""
        self.ack: SipRequest | None = None

    def start(self, now: float) -> list[Output]:
        if not self.peer.reliable:
            self._arm(I.TIMER_RETRANSMIT, now + T1)
        self._arm(I.TIMER_TIMEOUT, now + TIMEOUT)
        return [Send(message=self.request, peer=self.peer)]

    def receive_response(self, response: SipResponse, now: float) -> list[Output]:
        if response.status < 200:
            inp = I.RECV_1XX
        elif response.status < 300 and self.invite:
            inp = I.RECV_2XX
        else:
            inp = I.RECV_FINAL
        return self._fire(inp, response, now)

    def _effects(
        self,
        old: State,
        inp: Input,
        new: State,
        message: SipRequest | SipResponse | None,
        now: float,
    ) -> list[Output]:
        if inp is I.TIMER_RETRANSMIT:
            # Timer A doubles without bound (B ends it); Timer E is capped at T2.
            self._interval = self._interval * 2 if self.invite else min(self._interval * 2, T2)
            if new is S.PROCEEDING:
                self._interval = T2  # a non-INVITE that got a 1xx retransmits every T2
            self._arm(I.TIMER_RETRANSMIT, now + self._interval)
            return [Send(message=self.request, peer=self.peer)]
        if inp in (I.TIMER_TIMEOUT, I.TRANSPORT_ERROR):
            return [TimedOut(reason=inp.value)]
        if inp is I.TIMER_END:
            return []
        assert isinstance(message, SipResponse)
        if inp is I.RECV_1XX:
            if self.invite:
                self._disarm(I.TIMER_RETRANSMIT)
                self._arm(I.TIMER_TIMEOUT, now + TIMER_C)
            if old is S.COMPLETED:
                return []
            return [Deliver(response=message)]
        if inp is I.RECV_2XX:
            if old is not S.ACCEPTED:
                self._disarm(I.TIMER_RETRANSMIT, I.TIMER_TIMEOUT)
                self._arm(I.TIMER_END, now + TIMEOUT)  # Timer M
            return [Deliver(response=message)]
        # RECV_FINAL
        if self.invite:
            self.ack = self.ack or ack_for_failure(self.request, message)
            sends: list[Output] = [Send(message=self.ack, peer=self.peer)]
            if old is S.COMPLETED:
                return sends  # a retransmitted failure: ACK again, tell nobody
            self._disarm(I.TIMER_RETRANSMIT, I.TIMER_TIMEOUT)
            self._arm(I.TIMER_END, now + self._linger(TIMER_D))
            return [*sends, Deliver(response=message)]
        if old is S.COMPLETED:
            return []
        self._disarm(I.TIMER_RETRANSMIT, I.TIMER_TIMEOUT)
        self._arm(I.TIMER_END, now + self._linger(T4))  # Timer K
        return [Deliver(response=message)]


class ServerTransaction(_Transaction):
    """Answers a request and absorbs its retransmissions (RFC 3261 17.2, RFC 6026)."""

    def __init__(self, request: SipRequest, peer: Peer) -> None:
        invite = request.method == "INVITE"
        super().__init__(peer=peer, state=S.PROCEEDING if invite else S.TRYING)
        self.table = INVITE_SERVER if invite else NON_INVITE_SERVER
        self.request = request
        self.invite = invite
        self.last_response: SipResponse | None = None

    def receive_request(self, request: SipRequest, now: float) -> list[Output]:
        """A retransmission of our request, or (INVITE) the ACK of a non-2xx answer."""
        inp = I.RECV_ACK if request.method == "ACK" else I.RECV_REQUEST
        return self._fire(inp, request, now)

    def ack_received(self, now: float) -> list[Output]:
        """The transaction user saw the ACK of our 2xx (it has its own branch)."""
        return self._fire(I.RECV_ACK, None, now)

    def respond(self, response: SipResponse, now: float) -> list[Output]:
        if response.status < 200:
            inp = I.SEND_1XX
        elif response.status < 300:
            inp = I.SEND_2XX
        else:
            inp = I.SEND_FINAL
        return self._fire(inp, response, now)

    def _resend(self) -> list[Output]:
        if self.last_response is None:
            return []
        return [Send(message=self.last_response, peer=self.peer)]

    def _effects(
        self,
        old: State,
        inp: Input,
        new: State,
        message: SipRequest | SipResponse | None,
        now: float,
    ) -> list[Output]:
        if inp is I.RECV_REQUEST:
            return [] if new is S.CONFIRMED else self._resend()
        if inp in (I.SEND_1XX, I.SEND_2XX, I.SEND_FINAL):
            assert isinstance(message, SipResponse)
            self.last_response = message
            if new is S.ACCEPTED and old is not S.ACCEPTED:
                self._interval = T1
                if not self.peer.reliable:
                    self._arm(I.TIMER_RETRANSMIT, now + T1)
                self._arm(I.TIMER_TIMEOUT, now + TIMEOUT)  # no ACK by then: give up
                self._arm(I.TIMER_END, now + TIMEOUT)  # Timer L
            elif new is S.COMPLETED:
                if self.invite:
                    self._interval = T1
                    if not self.peer.reliable:
                        self._arm(I.TIMER_RETRANSMIT, now + T1)  # Timer G
                    self._arm(I.TIMER_TIMEOUT, now + TIMEOUT)  # Timer H
                else:
                    self._arm(I.TIMER_END, now + self._linger(TIMEOUT))  # Timer J
            return [Send(message=message, peer=self.peer)]
        if inp is I.TIMER_RETRANSMIT:
            self._interval = min(self._interval * 2, T2)
            self._arm(I.TIMER_RETRANSMIT, now + self._interval)
            return self._resend()
        if inp is I.RECV_ACK:
            self._disarm(I.TIMER_RETRANSMIT, I.TIMER_TIMEOUT)
            if new is S.CONFIRMED and old is S.COMPLETED:
                self._arm(I.TIMER_END, now + self._linger(T4))  # Timer I
            return []
        if inp in (I.TIMER_TIMEOUT, I.TRANSPORT_ERROR):
            return [TimedOut(reason="no ACK" if inp is I.TIMER_TIMEOUT else inp.value)]
        return []  # TIMER_END


def ack_for_failure(request: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK a client INVITE transaction sends for a 3xx-6xx (RFC 3261 17.1.1.3)."""
    headers: list[tuple[str, str]] = [("Via", request.header_values("Via")[0])]
    for key, value in request.headers:
        name = canonical_name(key)
        if name in ("From", "Call-ID", "Route", "Max-Forwards"):
            headers.append((name, value))
        elif name == "To":
            to = NameAddr.parse(value).with_tag(response.to.tag)
            headers.append(("To", to.serialize()))
        elif name == "CSeq":
            headers.append(("CSeq", f"{request.cseq.number} ACK"))
    return SipRequest(method="ACK", uri=request.uri, headers=with_body(headers, b"", None))


def transaction_key(message: SipRequest | SipResponse) -> tuple[str, str, str]:
    """(branch, sent-by, method) of RFC 3261 17.1.3 / 17.2.3; ACK and CANCEL keep their own
    method here, the caller maps them to the INVITE they belong to. Requests from RFC 2543
    elements (no magic cookie) are keyed by Call-ID, From tag and CSeq instead."""
    via = message.top_via
    branch = via.branch or ""
    method = message.cseq.method
    if branch.startswith("z9hG4bK"):
        return (branch, via.sent_by, method)
    return (
        f"2543:{message.call_id}:{message.from_.tag}:{message.cseq.number}",
        via.sent_by,
        method,
    )
