"""The SIP back-to-back user agent that records: registrar, call legs, INFO Record. No I/O.

Messages go in with :meth:`SipCore.receive` (bytes, where they came from, the time) and timers
fire through :meth:`SipCore.handle_timers`; what to do comes out of :meth:`SipCore.pop_actions`
as :mod:`callrec.sip.events` (datagrams to send, relay targets, recordings to start and stop).
Two things are injected because the core must have them synchronously: the media port
allocator (a relay pair must be in the SDP we send) and the account lookup (accounts are a
snapshot of the catalogue that the I/O layer refreshes).

Every call has two legs, each its own dialog: leg A with the caller (we are its UAS), leg B
with the callee (we are its UAC). Each leg's SDP is rewritten to our relay port on the side
facing it, so both RTP directions pass through callrec, where they are relayed and, when the
call is being recorded, written to a stereo file (left caller, right callee).

Two deployments (``CoreConfig.upstream``):

* **registrar** (no upstream): phones REGISTER here with digest authentication against the
  catalogue's accounts and call each other by user name; INVITEs are challenged too, and the
  caller is the account that answered the challenge. A call forks to every registered
  contact of the account called (one branch each, the first 2xx wins). INVITEs from
  ``trusted_peers`` (trunks, SBCs) are not challenged and come from outside.
* **outbound proxy** (upstream set): REGISTERs are relayed to the upstream SIP server with
  the phone's Contact replaced by ours (a per-phone token), so its incoming calls come through
  us (and only from the upstream or a trusted peer); the phones' calls go upstream.
  Authentication is the upstream's business: challenges and credentials pass through
  unchanged.

``Record: on`` / ``Record: off`` INFOs are answered here and never relayed: 403 when the
sender's account policy forbids it, 481 outside a call, 400 for another value; ``Record: on``
gets its 200 only when the I/O layer reports that the recording engine opened the recording
(:meth:`SipCore.recording_started`), or the engine's refusal (:meth:`SipCore.recording_refused`:
503 busy or disk full, 488 without a codec to record, 500 otherwise, with a ``Warning``). Each
Record on ... off is its own recording (see docs/sip.md for why).

Why one module of this size: it is one state machine. Every handler reads and changes the same
call table, dialog index, transaction maps and action queue, and most of them hand off to each
other (an answer starts a recording, a BYE ends one, a timeout hangs up); split across modules
they would share private state through arguments or back-references, which is harder to follow
than one file whose sections follow the life of a call. The parts that stand alone are already
their own modules: messages, headers, SDP, digest authentication, transactions, dialogs and the
registrar.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from callrec import __version__
from callrec.exceptions import ResourceError
from callrec.sip.accounts import POLICY_ALWAYS, POLICY_NEVER, POLICY_ON_DEMAND, Account
from callrec.sip.auth import DigestAuthenticator
from callrec.sip.dialog import MAX_FORWARDS, Dialog
from callrec.sip.errors import SipProtocolError
from callrec.sip.events import (
    Action,
    CallEnded,
    CallParty,
    MediaUpdate,
    StartRecording,
    StopRecording,
    Transmit,
)
from callrec.sip.headers import NameAddr, SipUri, Via, split_list
from callrec.sip.message import (
    SipRequest,
    SipResponse,
    canonical_name,
    is_keepalive,
    make_response,
    parse_message,
    reason_phrase,
    with_body,
)
from callrec.sip.peer import Peer
from callrec.sip.registrar import (
    Binding,
    IntervalTooBrief,
    Registrar,
    check_register,
    contact_header,
    contact_token,
    requested_contacts,
)
from callrec.sip.sdp import AudioStream, SdpError, SessionDescription, anchor, audio_stream
from callrec.sip.transaction import (
    ClientTransaction,
    Deliver,
    Output,
    Send,
    ServerTransaction,
    State,
    TimedOut,
    transaction_key,
)

logger = logging.getLogger(__name__)

#: What callrec takes outside a call (OPTIONS, 405 and 501 answers). MESSAGE and NOTIFY are
#: not here: a recorder has nobody to deliver a page or an unsolicited NOTIFY to, so outside a
#: call they get 405 with this list (docs/sip.md).
ALLOW: Final = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REGISTER"
#: Methods we relay inside a call, besides INVITE (re-INVITE), BYE and INFO.
RELAYED_IN_DIALOG: Final = frozenset({"INFO", "MESSAGE", "NOTIFY", "OPTIONS"})
#: What callrec takes inside a call (the INVITEs and 2xx that make a dialog, in-dialog 405s):
#: everything it relays there. REGISTER is never sent in a dialog.
DIALOG_ALLOW: Final = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, MESSAGE, NOTIFY"
#: Headers of a caller's INVITE that are passed on to the callee.
PASSED_REQUEST_HEADERS: Final = frozenset(
    {"Subject", "Accept", "Alert-Info", "Call-Info", "Priority", "Organization", "User-Agent"}
)
#: Headers of a callee's response that are passed back to the caller.
PASSED_RESPONSE_HEADERS: Final = frozenset(
    {"Warning", "Reason", "Retry-After", "Server", "Min-Expires"}
)
#: Credentials and challenges pass through only in outbound-proxy mode (the upstream's).
AUTH_REQUEST_HEADERS: Final = frozenset({"Authorization", "Proxy-Authorization"})
AUTH_RESPONSE_HEADERS: Final = frozenset({"WWW-Authenticate", "Proxy-Authenticate"})
SDP: Final = "application/sdp"
#: Stop reasons of recordings (the engine's vocabulary, see callrec.engine.spec).
STOP_HANGUP: Final = "hangup"
STOP_RECORD_OFF: Final = "record_off"
#: How a Record: on is answered when the recording engine refuses the recording, by reason.
REFUSAL_STATUS: Final = {"busy": 503, "disk_full": 503, "unsupported_codec": 488}
_MAC = re.compile(r"(?<![0-9a-fA-F])([0-9a-fA-F]{12})(?![0-9a-fA-F])")


class MediaAllocator(Protocol):
    def allocate(self, call: str) -> tuple[int, int]:
        """Open a relay for ``call``: (port facing the caller, port facing the callee).
        Raises ResourceError when none is free."""
        ...


AccountLookup = Callable[[str], Account | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class CoreConfig:
    """How this B2BUA presents itself; see :class:`callrec.config.Settings` for the sources."""

    #: Our SIP port per transport ("udp", "tcp"), as bound.
    ports: dict[str, int]
    #: Digest realm of the registrar.
    realm: str = "callrec"
    #: The SIP server we front in outbound-proxy mode; None: we are the registrar.
    upstream: Peer | None = None
    #: Policy of a party with no account here (proxy mode, or the far side of a call).
    default_policy: str = POLICY_ON_DEMAND
    min_expires: int = 60
    max_expires: int = 3600
    #: Challenge INVITEs from our phones (registrar mode).
    authenticate_invites: bool = True
    #: Networks (CIDR) of trunks and SBCs trusted by address (``sip_trusted_peers``): their
    #: INVITEs are not challenged and count as calls from outside; in proxy mode they may
    #: call the phones as the upstream does.
    trusted_peers: tuple[str, ...] = ()
    user_agent: str = f"callrec/{__version__}"


class CallState(enum.Enum):
    CALLING = "calling"
    RINGING = "ringing"
    ANSWERED = "answered"  # 2xx sent to the caller, its ACK not yet seen
    CONFIRMED = "confirmed"
    CANCELLING = "cancelling"
    ENDING = "ending"
    ENDED = "ended"


class CallInput(enum.Enum):
    PROVISIONAL = "callee sent 1xx"
    ANSWER = "callee answered"
    REJECT = "callee refused or timed out"
    CANCEL = "caller cancelled"
    ACK = "caller acknowledged the answer"
    BYE = "a BYE"
    DONE = "the last BYE completed"


C, CI = CallState, CallInput

CALL_TABLE: Final[dict[tuple[CallState, CallInput], CallState]] = {
    (C.CALLING, CI.PROVISIONAL): C.RINGING,
    (C.CALLING, CI.ANSWER): C.ANSWERED,
    (C.CALLING, CI.REJECT): C.ENDED,
    (C.CALLING, CI.CANCEL): C.CANCELLING,
    (C.RINGING, CI.PROVISIONAL): C.RINGING,
    (C.RINGING, CI.ANSWER): C.ANSWERED,
    (C.RINGING, CI.REJECT): C.ENDED,
    (C.RINGING, CI.CANCEL): C.CANCELLING,
    (C.CANCELLING, CI.PROVISIONAL): C.CANCELLING,
    (C.CANCELLING, CI.REJECT): C.ENDED,
    (C.CANCELLING, CI.ANSWER): C.ENDING,
    (C.ANSWERED, CI.ACK): C.CONFIRMED,
    (C.ANSWERED, CI.BYE): C.ENDING,
    (C.CONFIRMED, CI.ACK): C.CONFIRMED,
    (C.CONFIRMED, CI.BYE): C.ENDING,
    (C.ENDING, CI.BYE): C.ENDING,
    (C.ENDING, CI.REJECT): C.ENDING,
    (C.ENDING, CI.DONE): C.ENDED,
}
#: States in which the callee's branches are still being waited for.
PRE_ANSWER: Final = frozenset({C.CALLING, C.RINGING, C.CANCELLING})
#: States in which media flows and recording may run.
ESTABLISHED: Final = frozenset({C.ANSWERED, C.CONFIRMED})


@dataclass(eq=False, slots=True, kw_only=True)
class Leg:
    role: str  # "caller" or "callee"
    peer: Peer
    #: Our relay port on the side facing this leg (what its SDP from us announces).
    media_port: int
    account: Account | None
    policy: str
    party: CallParty
    dialog: Dialog | None = None
    stream: AudioStream | None = None
    #: Our tag towards this leg (caller leg: To tag; callee leg: From tag).
    local_tag: str = ""
    #: Server transaction of an INVITE from this leg whose 2xx still waits for its ACK.
    pending_ack: ServerTransaction | None = None
    #: A re-INVITE relayed away from this leg is in progress (491 for another one).
    reinvite_pending: bool = False


@dataclass(eq=False, slots=True, kw_only=True)
class Branch:
    """One INVITE of a call to the callee: one per registered contact of the account called
    (a fork, RFC 3261 16.6), each its own dialog; the first to answer wins the call."""

    leg: Leg
    invite: SipRequest
    provisional: bool = False
    #: A CANCEL is owed once a provisional arrives (RFC 3261 9.1: none before).
    cancel_pending: bool = False
    cancelled: bool = False
    #: Timer C fired: it rang too long and was cancelled.
    timed_out: bool = False
    #: It has its final answer (or never will): nothing more is waited for from it.
    done: bool = False
    #: Its final non-2xx status (408 for no answer at all) and the response, if any.
    status: int = 0
    final: SipResponse | None = None


@dataclass(eq=False, slots=True, kw_only=True)
class Call:
    ref: str
    a: Leg
    #: The callee's leg: the branch that answered, or the first one until one does.
    b: Leg
    a_invite: SipRequest
    a_tx: ServerTransaction
    b_invite: SipRequest
    direction: str
    branches: list[Branch] = field(default_factory=list)
    winner: Branch | None = None
    state: CallState = CallState.CALLING
    recording: bool = False
    forced: bool = False  # a policy "always" records this call; Record: off is refused
    segment: int = 0
    #: The ``INFO Record: on`` waiting for the engine to say whether the segment started.
    pending_record: tuple[ServerTransaction, SipRequest] | None = None
    end_reason: str = ""
    byes_pending: int = 0
    log: logging.LoggerAdapter[logging.Logger] = field(init=False)

    def __post_init__(self) -> None:
        self.log = _CallLog(logger, {"call": self.ref})

    def fire(self, inp: CallInput) -> bool:
        new = CALL_TABLE.get((self.state, inp))
        if new is None:
            return False
        self.state = new
        return True

    def other(self, leg: Leg) -> Leg:
        return self.b if leg is self.a else self.a


class _CallLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        assert self.extra is not None
        return f"[{self.extra['call']}] {msg}", kwargs


ResponseHandler = Callable[[SipResponse | None, float], None]


class SipCore:
    """One SIP B2BUA instance: feed it messages and timer ticks, carry out its actions."""

    def __init__(
        self,
        config: CoreConfig,
        *,
        accounts: AccountLookup,
        media: MediaAllocator,
        local_address: Callable[[Peer], str],
        media_address: Callable[[Peer], str] | None = None,
        auth: DigestAuthenticator | None = None,
        token: Callable[[int], str] | None = None,
    ) -> None:
        self.config = config
        self._accounts = accounts
        self._media = media
        self._local_address = local_address
        self._media_address = media_address or local_address
        self.auth = auth or DigestAuthenticator(config.realm)
        self._token = token or secrets.token_hex
        self.registrar = Registrar(min_expires=config.min_expires, max_expires=config.max_expires)
        self._actions: list[Action] = []
        self._server_txs: dict[tuple[str, str, str], ServerTransaction] = {}
        self._client_txs: dict[tuple[str, str], tuple[ClientTransaction, ResponseHandler]] = {}
        self._calls: dict[str, Call] = {}
        self._by_invite: dict[tuple[str, str, str], Call] = {}
        self._dialogs: dict[tuple[str, str], tuple[Call, Leg]] = {}
        #: Dialogs of branches that answered after another had won (or the caller had gone):
        #: ACKed and hung up, kept until their BYE is over to re-ACK a retransmitted 2xx.
        self._late: dict[tuple[str, str], Dialog] = {}
        self._trusted = _networks(config.trusted_peers)
        #: The time of the latest input, for answers given where no time is passed in.
        self._now = 0.0

    # -- the interface ---------------------------------------------------------------------

    def receive(self, data: bytes, peer: Peer, now: float) -> None:
        """One datagram (or one framed stream message) from ``peer``."""
        self._now = now
        if is_keepalive(data):
            return
        try:
            message = parse_message(data, stream=peer.reliable)
        except SipProtocolError as exc:
            logger.info("malformed SIP message from %s: %s", peer, exc)
            self._answer_unparseable(data, peer, exc)
            return
        if isinstance(message, SipResponse):
            self._on_response(message, now)
        else:
            self._on_request(message, peer, now)

    def refuse(
        self, data: bytes, peer: Peer, now: float, *, status: int = 403, retry_after: int = 0
    ) -> bool:
        """Answer a request from a peer that may not use this server (``sip_allow``) with
        ``status``, keeping no state for it: no transaction, no dialog, so a flood from such
        an address costs one answer each and nothing stays (also 503 with ``retry_after`` for
        a source over its request rate). Responses and ACKs get no answer.
        Returns whether the message was a request (worth counting as refused)."""
        self._now = now
        if is_keepalive(data):
            return False
        try:
            message = parse_message(data, stream=peer.reliable)
        except SipProtocolError:
            return False
        if isinstance(message, SipResponse):
            return False
        if message.method != "ACK":
            response = make_response(
                message,
                status,
                "Forbidden (address not allowed)" if status == 403 else None,
                to_tag=None if message.to.tag else self._token(8),
                headers=[
                    *([("Retry-After", str(retry_after))] if retry_after else []),
                    ("Server", self.config.user_agent),
                ],
            )
            self._actions.append(Transmit(message=_with_received(response, peer), peer=peer))
        return True

    def handle_timers(self, now: float) -> None:
        self._now = now
        for key, stx in list(self._server_txs.items()):
            deadline = stx.next_deadline()
            if deadline is not None and deadline <= now:
                self._server_outputs(stx, stx.on_timer(now), now)
            if stx.terminated:
                self._server_txs.pop(key, None)
                self._by_invite.pop(key, None)
        for ckey, (ctx, handler) in list(self._client_txs.items()):
            deadline = ctx.next_deadline()
            if deadline is not None and deadline <= now:
                self._client_outputs(ctx, handler, ctx.on_timer(now), now)
            if ctx.terminated:
                self._client_txs.pop(ckey, None)

    def next_deadline(self) -> float | None:
        deadlines = [t.next_deadline() for t in self._server_txs.values()]
        deadlines += [t.next_deadline() for t, _ in self._client_txs.values()]
        return min((d for d in deadlines if d is not None), default=None)

    def uses(self, peer: Peer, now: float) -> bool:
        """Does a live registration or a call go through ``peer`` (a TCP connection the
        I/O layer must keep open however quiet it is)?"""
        if self.registrar.has_peer(peer, now):
            return True
        return any(
            peer in (call.a.peer, *(b.leg.peer for b in call.branches))
            for call in self._calls.values()
        )

    def trusted(self, host: str) -> bool:
        """Is ``host`` one of ``trusted_peers`` (a trunk or SBC trusted by address)?"""
        return _in_networks(host, self._trusted)

    def pop_actions(self) -> list[Action]:
        out, self._actions = self._actions, []
        return out

    def end_call(self, ref: str, reason: str, now: float) -> None:
        """Hang up both legs of a call (media timeout, shutdown)."""
        self._now = now
        call = self._calls.get(ref)
        if call is None:
            return
        if call.state in (C.CALLING, C.RINGING):
            self._respond(call.a_tx, call.a_invite, 480, now, to_tag=call.a.local_tag)
            self._cancel_callee(call, now)
            call.fire(CI.CANCEL)
            return
        if call.state in ESTABLISHED:
            call.fire(CI.BYE)
            for leg in (call.a, call.b):
                self._send_bye(call, leg, now)
            self._stop_recording(call, reason)
            call.end_reason = reason
            if call.byes_pending == 0:
                self._call_done(call, reason)

    @property
    def calls(self) -> dict[str, Call]:
        return self._calls

    # -- requests --------------------------------------------------------------------------

    def _on_request(self, request: SipRequest, peer: Peer, now: float) -> None:
        key = transaction_key(request)
        if request.method == "ACK":
            invite_tx = self._server_txs.get((key[0], key[1], "INVITE"))
            if invite_tx is not None and invite_tx.state in (State.COMPLETED, State.CONFIRMED):
                self._server_outputs(invite_tx, invite_tx.receive_request(request, now), now)
                return
            self._on_dialog_ack(request, now)
            return
        existing = self._server_txs.get(key)
        if existing is not None:
            self._server_outputs(existing, existing.receive_request(request, now), now)
            return
        tx = ServerTransaction(request, peer)
        self._server_txs[key] = tx
        try:
            self._dispatch(request, tx, peer, now)
        except SipProtocolError as exc:
            logger.info("refused %s from %s: %s", request.method, peer, exc)
            headers: list[tuple[str, str]] = []
            if isinstance(exc, IntervalTooBrief):
                headers.append(("Min-Expires", str(exc.min_expires)))
            if tx.last_response is None or tx.last_response.status < 200:
                self._respond(tx, request, exc.status, now, headers=headers)

    def _dispatch(self, request: SipRequest, tx: ServerTransaction, peer: Peer, now: float) -> None:
        method = request.method
        if method == "CANCEL":
            self._on_cancel(request, tx, now)
            return
        require = [r for r in request.header_values("Require") if r]
        if require and method not in ("ACK", "CANCEL"):
            self._respond(tx, request, 420, now, headers=[("Unsupported", ", ".join(require))])
            return
        scheme = request.uri.partition(":")[0].lower()
        if scheme not in ("sip", "sips"):
            self._respond(tx, request, 416, now)
            return
        if request.to.tag is not None:
            self._on_dialog_request(request, tx, now)
            return
        if method == "REGISTER":
            self._on_register(request, tx, peer, now)
        elif method == "INVITE":
            self._on_invite(request, tx, peer, now)
        elif method == "OPTIONS":
            self._respond(
                tx,
                request,
                200,
                now,
                to_tag=self._token(8),
                headers=[("Allow", ALLOW), ("Accept", SDP)],
            )
        elif method in ("BYE", "INFO"):
            self._respond(tx, request, 481, now)
        elif method in ("MESSAGE", "NOTIFY", "SUBSCRIBE", "PUBLISH", "REFER", "UPDATE", "PRACK"):
            # Known methods callrec does not take outside a call (see ALLOW).
            self._respond(tx, request, 405, now, headers=[("Allow", ALLOW)])
        else:
            self._respond(tx, request, 501, now, headers=[("Allow", ALLOW)])

    def _answer_unparseable(self, data: bytes, peer: Peer, exc: SipProtocolError) -> None:
        """Answer a broken request if it names enough of itself to be answered at all."""
        head = data.split(b"\n", 1)[0]
        if head.startswith(b"SIP/") or head[:4] == b"ACK ":
            return
        text = data.decode("utf-8", "surrogateescape").replace("\r\n", "\n")
        # Folded header lines (RFC 3261 7.3.1) belong to the line above.
        lines = re.sub(r"\n[ \t]+", " ", text.split("\n\n", 1)[0]).split("\n")
        keep: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            canonical = canonical_name(name.strip())
            if not colon or canonical not in ("Via", "From", "To", "Call-ID", "CSeq"):
                continue
            if canonical != "Via" and any(k == canonical for k, _ in keep):
                continue  # a repeated one (RFC 4475 multi01): the first is echoed
            if any(c in value for c in "\r\0"):
                continue
            keep.append((canonical, value.strip()))
        if not any(name == "Via" for name, _ in keep):
            return  # nothing says where an answer would go
        # RFC 4475 expects a 400 even where From, To or Call-ID are broken or missing: those
        # that are there are echoed as they came (RFC 3261 8.2.6.2), the rest left out; the
        # answer goes back to the address the request came from.
        reason = f"Bad Request ({exc})"[:120] if exc.status == 400 else None
        response = SipResponse(
            status=exc.status,
            reason=_clean_reason(reason) if reason else _reason(exc.status),
            headers=with_body(keep, b"", None),
        )
        self._actions.append(Transmit(message=response, peer=peer))

    # -- REGISTER --------------------------------------------------------------------------

    def _on_register(
        self, request: SipRequest, tx: ServerTransaction, peer: Peer, now: float
    ) -> None:
        # A malformed REGISTER is refused (400) before it is challenged or relayed: new
        # credentials would not make it any better.
        check_register(request)
        if self.config.upstream is not None:
            self._relay_register(request, tx, peer, now)
            return
        verdict = self.auth.verify(
            request.header("Authorization"), method="REGISTER", now=now, lookup=self._ha1
        )
        if not verdict.ok:
            if verdict.reason in (
                "wrong password",
                "unknown user",
                "credentials for another realm",
            ):
                logger.warning(
                    "REGISTER from %s refused: %s (%s)", peer, verdict.reason, verdict.username
                )
                self._respond(tx, request, 403, now)
                return
            stale = verdict.stale or verdict.reason == "not our nonce"
            self._respond(
                tx,
                request,
                401,
                now,
                headers=[("WWW-Authenticate", self.auth.challenge(now, stale=stale))],
            )
            return
        aor = request.to.sip_uri().user or ""
        if aor != verdict.username:
            self._respond(tx, request, 403, now, reason="Forbidden (To is not the account)")
            return
        bindings = self.registrar.register(request, aor=aor, peer=peer, now=now)
        headers = [("Contact", contact_header(b, now)) for b in bindings]
        self._respond(tx, request, 200, now, headers=headers, to_tag=self._token(8))
        logger.info("%s registered %d contact(s) from %s", aor, len(bindings), peer)

    def _ha1(self, username: str, algorithm: str) -> str | None:
        account = self._accounts(username)
        if account is None or account.realm != self.config.realm:
            return None
        return account.ha1(algorithm)

    def _relay_register(
        self, request: SipRequest, tx: ServerTransaction, peer: Peer, now: float
    ) -> None:
        upstream = self.config.upstream
        assert upstream is not None
        aor = request.to.sip_uri().user or ""
        wildcard, wanted = requested_contacts(request)
        mapping: dict[str, str] = {}
        headers: list[tuple[str, str]] = [("Via", self._via(upstream))]
        for key, value in request.headers:
            name = canonical_name(key)
            if name in (
                "Via",
                "Contact",
                "Content-Length",
                "Content-Type",
                "Record-Route",
                "Route",
            ):
                continue
            if name == "Max-Forwards":
                value = str(max(0, _max_forwards(request) - 1))
            headers.append((name, value))
        if wildcard:
            headers.append(("Contact", "*"))
        for item in wanted:
            token = contact_token(aor, item.contact)
            ours = self._contact_uri(upstream, user=token)
            mapping[ours] = item.contact
            headers.append(("Contact", f"<{ours}>;expires={item.expires}"))
        relayed = SipRequest(
            method="REGISTER", uri=request.uri, headers=with_body(headers, b"", None)
        )

        def done(response: SipResponse | None, when: float) -> None:
            if response is None:
                self._respond(tx, request, 408, when)
                return
            if response.status < 200:
                return
            out: list[tuple[str, str]] = []
            for key, value in response.headers:
                name = canonical_name(key)
                if (
                    name in AUTH_RESPONSE_HEADERS
                    or name in PASSED_RESPONSE_HEADERS
                    or name == "Date"
                ):
                    out.append((name, value))
            if response.success:
                out += self._learn_bindings(response, request, aor, mapping, peer, when)
            self._respond(tx, request, response.status, when, reason=response.reason, headers=out)

        self._send_request(relayed, upstream, done, now)

    def _learn_bindings(
        self,
        response: SipResponse,
        request: SipRequest,
        aor: str,
        mapping: dict[str, str],
        peer: Peer,
        now: float,
    ) -> list[tuple[str, str]]:
        """Bindings of the phone from upstream's 200: store ours, translate them back."""
        granted: dict[str, int] = {}
        default = _int_or(response.header("Expires"), 3600)
        for value in response.header_values("Contact"):
            try:
                addr = NameAddr.parse(value)
            except SipProtocolError:
                continue
            if addr.uri in mapping:
                granted[addr.uri] = _int_or(addr.param("expires"), default)
        out: list[tuple[str, str]] = []
        for ours, phone_contact in mapping.items():
            expires = granted.get(ours)
            if expires is None or expires == 0:
                self.registrar.remove(aor, phone_contact)
                continue
            self.registrar.store(
                Binding(
                    aor=aor,
                    contact=phone_contact,
                    peer=peer,
                    expires_at=now + expires,
                    call_id=request.call_id,
                    cseq=request.cseq.number,
                    token=contact_token(aor, phone_contact),
                    user_agent=request.header("User-Agent") or "",
                )
            )
            out.append(("Contact", f"<{phone_contact}>;expires={expires}"))
        return out

    # -- INVITE: a new call ----------------------------------------------------------------

    def _on_invite(
        self, request: SipRequest, tx: ServerTransaction, peer: Peer, now: float
    ) -> None:
        if _max_forwards(request) <= 0:
            self._respond(tx, request, 483, now)
            return
        self._respond(tx, request, 100, now)
        routed = self._route(request, tx, peer, now)
        if routed is None:
            return
        targets, caller, direction = routed
        if request.body and request.content_type != SDP:
            self._respond(tx, request, 415, now, headers=[("Accept", SDP)])
            return
        if not _accepts_sdp(request):
            # RFC 4475 sdp01: our answer can only be SDP, which the caller says it cannot take.
            self._respond(
                tx,
                request,
                406,
                now,
                headers=[("Warning", '399 callrec "the answer is application/sdp only"')],
            )
            return
        if not request.body:
            self._respond(
                tx, request, 488, now, reason="Not Acceptable Here (an SDP offer is required)"
            )
            return
        offer = SessionDescription.parse(request.body)
        caller_stream = audio_stream(offer)
        ref = self._token(6)
        try:
            caller_port, callee_port = self._media.allocate(ref)
        except ResourceError as exc:
            logger.warning("no media ports for a call from %s: %s", peer, exc)
            self._respond(tx, request, 503, now, headers=[("Retry-After", "5")])
            return
        branches: list[Branch] = []
        for target_peer, target_uri, callee in targets:
            try:
                b_body = anchor(
                    offer, address=self._media_address(target_peer), port=callee_port
                ).serialize()
            except SdpError:
                self._actions.append(CallEnded(call=ref, reason="unacceptable_sdp"))
                raise
            # Every branch is an INVITE (and a dialog) of its own, with its own Call-ID:
            # callrec is the user agent of each, and the answer picks one.
            b_invite = self._callee_invite(request, target_peer, target_uri, b_body)
            leg = Leg(
                role="callee",
                peer=target_peer,
                media_port=callee_port,
                account=callee[0],
                policy=callee[1],
                party=callee[2],
                local_tag=b_invite.from_.tag or "",
                dialog=Dialog.as_uac(b_invite, peer=target_peer),
            )
            branches.append(Branch(leg=leg, invite=b_invite))
        a_leg = Leg(
            role="caller",
            peer=peer,
            media_port=caller_port,
            account=caller[0],
            policy=caller[1],
            party=caller[2],
            stream=caller_stream,
            local_tag=self._token(8),
        )
        call = Call(
            ref=ref,
            a=a_leg,
            b=branches[0].leg,
            a_invite=request,
            a_tx=tx,
            b_invite=branches[0].invite,
            direction=direction,
            branches=branches,
        )
        call.forced = POLICY_ALWAYS in (a_leg.policy, call.b.policy)
        self._calls[ref] = call
        self._by_invite[transaction_key(request)] = call
        call.log.info(
            "%s -> %s (%s): caller %s, callee %s",
            caller[2].number,
            call.b.party.number,
            direction,
            peer,
            ", ".join(f"{b.invite.uri} at {b.leg.peer}" for b in branches),
        )
        for branch in branches:
            self._send_request(
                branch.invite, branch.leg.peer, self._branch_handler(call, branch), now
            )

    def _branch_handler(self, call: Call, branch: Branch) -> ResponseHandler:
        def on_response(response: SipResponse | None, when: float) -> None:
            self._on_callee_answer(call, branch, response, when)

        return on_response

    def _route(
        self, request: SipRequest, tx: ServerTransaction, peer: Peer, now: float
    ) -> tuple[list[_Target], _Side, str] | None:
        """Where the call goes (one target per contact to fork to), who calls, and the
        direction; None once we answered it ourselves."""
        from_uri = _user(request.from_.uri)
        to_user = _user(request.uri)
        caller_name = request.from_.display_name
        callee_name = request.to.display_name
        user_agent = request.header("User-Agent") or ""
        upstream = self.config.upstream
        trusted = self.trusted(peer.host)
        if upstream is None:
            caller_account: Account | None = None
            number = from_uri
            if trusted:
                # A trunk or SBC trusted by address: no challenge; the caller is outside.
                pass
            elif self.config.authenticate_invites:
                verdict = self.auth.verify(
                    request.header("Proxy-Authorization"),
                    method="INVITE",
                    now=now,
                    lookup=self._ha1,
                )
                if not verdict.ok:
                    if verdict.reason in ("wrong password", "unknown user"):
                        self._respond(tx, request, 403, now)
                    else:
                        stale = verdict.stale or verdict.reason == "not our nonce"
                        challenge = self.auth.challenge(now, stale=stale)
                        self._respond(
                            tx, request, 407, now, headers=[("Proxy-Authenticate", challenge)]
                        )
                    return None
                caller_account = self._accounts(verdict.username)
                # The party is the account that proved who it is, whatever From says (the
                # From display name is kept: it is what the phone shows).
                number = verdict.username
            else:
                caller_account = self._accounts(from_uri)
            bindings = self.registrar.lookup(to_user, now)
            callee_account = self._accounts(to_user)
            if not bindings:
                status = 480 if callee_account is not None else 404
                self._respond(tx, request, status, now, to_tag=self._token(8))
                return None
            caller = self._side(caller_account, number, caller_name, user_agent, peer)
            targets = [
                (
                    binding.peer,
                    binding.contact,
                    self._side(
                        callee_account, to_user, callee_name, binding.user_agent, binding.peer
                    ),
                )
                for binding in bindings
            ]
            return targets, caller, "in" if trusted else "out"
        token_binding = self.registrar.by_token(to_user, now) if to_user else None
        if token_binding is not None:
            if not trusted and not _same_host(peer.host, upstream.host):
                # Only the upstream (or a trusted peer) knows the phones' callrec contacts
                # honestly: anyone else calling one is going around the PBX.
                logger.warning(
                    "INVITE for a phone's contact from %s refused: not the upstream", peer
                )
                self._respond(
                    tx,
                    request,
                    403,
                    now,
                    reason="Forbidden (calls to phones come from the upstream)",
                    to_tag=self._token(8),
                )
                return None
            callee_account = self._accounts(token_binding.aor)
            caller = self._side(None, from_uri, caller_name, "", peer)
            callee = self._side(
                callee_account,
                token_binding.aor,
                callee_name,
                token_binding.user_agent,
                token_binding.peer,
            )
            return [(token_binding.peer, token_binding.contact, callee)], caller, "in"
        caller_account = self._accounts(from_uri)
        caller = self._side(caller_account, from_uri, caller_name, user_agent, peer)
        callee = self._side(None, to_user, callee_name, "", upstream)
        return [(upstream, request.uri, callee)], caller, "out"

    def _side(
        self, account: Account | None, number: str, name: str, user_agent: str, peer: Peer
    ) -> _Side:
        policy = account.policy if account is not None else self.config.default_policy
        mac = _MAC.search(user_agent)
        party = CallParty(
            number=number,
            name=name or (account.display_name if account else ""),
            account=account.username if account else None,
            device=mac.group(1).lower() if mac else "",
            address=peer.host,
        )
        return (account, policy, party)

    def _callee_invite(self, request: SipRequest, peer: Peer, uri: str, body: bytes) -> SipRequest:
        proxy = self.config.upstream is not None
        from_ = request.from_.with_tag(self._token(8))
        to = request.to.with_tag(None)
        if proxy:
            # The same caller retrying with credentials must look like the same call upstream:
            # some servers tie their nonces to the Call-ID.
            call_id = (
                "cr"
                + hashlib.sha256(request.call_id.encode("utf-8", "surrogateescape")).hexdigest()[
                    :24
                ]
            )
            cseq = request.cseq.number
        else:
            call_id = self._token(12)
            cseq = 1
        headers: list[tuple[str, str]] = [
            ("Via", self._via(peer)),
            ("Max-Forwards", str(min(MAX_FORWARDS, _max_forwards(request) - 1))),
            ("From", from_.serialize()),
            ("To", to.serialize()),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} INVITE"),
            ("Contact", self._contact(peer)),
            ("Allow", DIALOG_ALLOW),
        ]
        for key, value in request.headers:
            name = canonical_name(key)
            if name in PASSED_REQUEST_HEADERS or (proxy and name in AUTH_REQUEST_HEADERS):
                headers.append((name, value))
        return SipRequest(
            method="INVITE", uri=uri, headers=with_body(headers, body, SDP), body=body
        )

    def _on_callee_answer(
        self, call: Call, branch: Branch, response: SipResponse | None, now: float
    ) -> None:
        b = branch.leg
        assert b.dialog is not None
        if response is not None and response.success and branch is call.winner:
            self._ack_callee(b, response, now)  # a retransmitted 2xx: it needs its ACK again
            return
        live = call.ref in self._calls and not branch.done
        if not live or call.winner is not None or call.state not in PRE_ANSWER:
            self._branch_after_the_fact(call, branch, response, now)
            return
        if response is None:
            self._branch_silent(call, branch, now)
            return
        b.dialog.response_received(response)
        status = response.status
        if status == 100:
            return
        if status < 200:
            branch.provisional = True
            if branch.cancel_pending:
                self._cancel_branch(call, branch, now)
                return
            call.fire(CI.PROVISIONAL)
            if call.state is C.CANCELLING:
                return
            body, ctype = self._relay_sdp(call, response, towards=call.a, origin=b)
            if body and ctype == SDP:
                call.b = b  # the branch whose early media plays to the caller
                self._media_update(call)  # early media flows before the answer
            self._respond(
                call.a_tx,
                call.a_invite,
                status,
                now,
                reason=response.reason,
                to_tag=call.a.local_tag,
                headers=[("Contact", self._contact(call.a.peer))],
                body=body,
                content_type=ctype,
                copy_record_route=True,
            )
            return
        if status < 300:
            if call.state is C.CANCELLING:
                # The caller gave up as this branch answered: it is ACKed and hung up.
                self._branch_after_the_fact(call, branch, response, now)
                return
            self._answered(call, branch, response, now)
            return
        # 3xx-6xx: this branch is out; the call fails once every branch is.
        branch.done = True
        branch.status = status
        branch.final = response
        call.log.info("callee at %s refused: %d %s", b.peer, status, response.reason)
        self._branches_over(call, now)

    def _answered(self, call: Call, branch: Branch, response: SipResponse, now: float) -> None:
        """The first 2xx of any branch: it is the call; the other branches are cancelled."""
        b = branch.leg
        assert b.dialog is not None
        call.winner = branch
        call.b = b
        call.b_invite = branch.invite
        branch.done = True
        self._ack_callee(b, response, now)
        for other in call.branches:
            if other is not branch and not other.done:
                self._cancel_branch(call, other, now)
        try:
            answer = SessionDescription.parse(response.body)
            b.stream = audio_stream(answer)
            a_body = anchor(
                answer, address=self._media_address(call.a.peer), port=call.a.media_port
            ).serialize()
        except SdpError as exc:
            call.log.warning("callee's answer is unusable: %s", exc)
            self._respond(call.a_tx, call.a_invite, 488, now, to_tag=call.a.local_tag)
            call.state = C.ENDING
            call.end_reason = "unacceptable_sdp"
            self._send_bye(call, b, now)
            return
        a_dialog = Dialog.as_uas(call.a_invite, local_tag=call.a.local_tag, peer=call.a.peer)
        a_dialog.answered()
        call.a.dialog = a_dialog
        call.a.pending_ack = call.a_tx
        self._dialogs[(a_dialog.call_id, a_dialog.local_tag)] = (call, call.a)
        self._dialogs[(b.dialog.call_id, b.dialog.local_tag)] = (call, b)
        self._respond(
            call.a_tx,
            call.a_invite,
            response.status,
            now,
            reason=response.reason,
            to_tag=call.a.local_tag,
            headers=[("Contact", self._contact(call.a.peer)), ("Allow", DIALOG_ALLOW)],
            body=a_body,
            content_type=SDP,
            copy_record_route=True,
        )
        call.fire(CI.ANSWER)
        call.log.info("answered at %s (%s)", b.peer, self._codec_text(call))
        self._media_update(call)
        if call.forced:
            self._start_recording(call, "always")

    def _branch_silent(self, call: Call, branch: Branch, now: float) -> None:
        """A branch's INVITE timed out: no answer at all (Timer B), or ringing too long
        (Timer C), when it is cancelled and its 487 awaited."""
        if branch.provisional and not branch.cancelled:
            branch.timed_out = True
            self._cancel_branch(call, branch, now)
            undecided = [b for b in call.branches if not b.done]
            if call.state is C.RINGING and all(b.timed_out for b in undecided):
                # Every phone rang for minutes: the caller hears 408 now, and the 487s of the
                # cancelled branches end the call.
                call.log.info("callee did not answer in time")
                self._respond(call.a_tx, call.a_invite, 408, now, to_tag=call.a.local_tag)
                call.fire(CI.CANCEL)
            return
        branch.done = True
        branch.status = 408
        call.log.info("callee at %s did not answer", branch.leg.peer)
        self._branches_over(call, now)

    def _branches_over(self, call: Call, now: float) -> None:
        """When every branch has failed, the call has: the caller gets the best of their
        answers (RFC 3261 16.7) unless it already has a final one."""
        if any(not b.done for b in call.branches) or call.winner is not None:
            return
        if call.state is C.CANCELLING:
            call.fire(CI.REJECT)
            self._call_done(call, "cancelled")
            return
        if call.state not in (C.CALLING, C.RINGING):
            return
        best = best_branch(call.branches)
        status = best.status
        if best.final is None:
            call.log.info("no callee answered")
            last = call.a_tx.last_response
            if last is None or last.status < 200:
                self._respond(call.a_tx, call.a_invite, 408, now, to_tag=call.a.local_tag)
            call.fire(CI.REJECT)
            self._call_done(call, "no_answer")
            return
        reason = best.final.reason
        if status == 503:
            # RFC 3261 16.7 step 6: a callee's 503 is its overload, not ours; passed on, it
            # would make the caller back off from callrec itself.
            status, reason = 500, "Server Internal Error (the callee is unavailable)"
        headers: list[tuple[str, str]] = []
        for key, value in best.final.headers:
            name = canonical_name(key)
            if name == "Retry-After" and best.status == 503:
                continue
            if name in PASSED_RESPONSE_HEADERS or (
                self.config.upstream is not None and name in AUTH_RESPONSE_HEADERS
            ):
                headers.append((name, value))
        self._respond(
            call.a_tx,
            call.a_invite,
            status,
            now,
            reason=reason,
            to_tag=call.a.local_tag,
            headers=headers,
        )
        call.fire(CI.REJECT)
        self._call_done(call, f"rejected_{status}")

    def _branch_after_the_fact(
        self, call: Call, branch: Branch, response: SipResponse | None, now: float
    ) -> None:
        """A response of a branch the call no longer waits for: another branch won, or the
        caller gave up. A 2xx is ACKed and hung up at once (RFC 3261 16.7: a proxy passes
        every 2xx on; a B2BUA has one caller dialog, so the late one is ended); a 1xx of a
        branch still owed its CANCEL gets it."""
        b = branch.leg
        assert b.dialog is not None
        if response is None:
            if not branch.done:
                branch.done = True
                branch.status = 408
                self._branches_over(call, now)
            return
        if response.status < 200:
            b.dialog.response_received(response)
            branch.provisional = True
            if branch.cancel_pending:
                self._cancel_branch(call, branch, now)
            return
        if not response.success:
            if not branch.done:
                branch.done = True
                branch.status = response.status
                branch.final = response
                self._branches_over(call, now)
            return
        dialog = b.dialog
        dialog.response_received(response)
        self._ack_callee(b, response, now)
        if not dialog.terminated and dialog.remote_tag is not None:
            call.log.info("hanging up the late answer from %s", b.peer)
            bye = dialog.request("BYE", via=self._via(b.peer))
            dialog.bye()
            key = (dialog.call_id, dialog.local_tag)
            self._late[key] = dialog

            def done(_response: SipResponse | None, _when: float) -> None:
                self._late.pop(key, None)

            self._send_request(bye, b.peer, done, now)
        if not branch.done:
            branch.done = True
            branch.status = 487  # ended by us: it counts as a cancelled branch
            self._branches_over(call, now)

    def _codec_text(self, call: Call) -> str:
        codec = self._call_codec(call)
        return codec[1] if codec else "no common codec"

    def _call_codec(self, call: Call) -> tuple[int, str] | None:
        """The codec the callee answered with first: both directions record with it."""
        if call.b.stream is None:
            return None
        return call.b.stream.first_codec

    def _media_update(self, call: Call) -> None:
        codec = self._call_codec(call)
        a, b = call.a.stream, call.b.stream
        self._actions.append(
            MediaUpdate(
                call=call.ref,
                caller=(a.address, a.port) if a is not None and a.address else None,
                callee=(b.address, b.port) if b is not None and b.address else None,
                codec=codec[1] if codec else None,
                payload_type=codec[0] if codec else None,
                caller_signalling_ip=call.a.peer.host,
                callee_signalling_ip=call.b.peer.host,
            )
        )

    def _relay_sdp(
        self,
        call: Call,
        message: SipRequest | SipResponse,
        *,
        towards: Leg,
        origin: Leg | None = None,
    ) -> tuple[bytes, str | None]:
        """The body of ``message`` for the other leg: SDP anchored on ``towards``' port."""
        if not message.body:
            return b"", None
        if message.content_type != SDP:
            return message.body, message.header("Content-Type")
        try:
            sdp = SessionDescription.parse(message.body)
            stream = audio_stream(sdp)
            rewritten = anchor(
                sdp, address=self._media_address(towards.peer), port=towards.media_port
            )
        except SdpError as exc:
            call.log.info("dropping an unusable early SDP: %s", exc)
            return b"", None
        (origin or call.other(towards)).stream = stream
        return rewritten.serialize(), SDP

    def _ack_callee(self, b: Leg, response: SipResponse, now: float) -> None:
        assert b.dialog is not None
        if b.dialog.last_ack is None or b.dialog.last_ack.cseq.number != response.cseq.number:
            b.dialog.last_ack = b.dialog.request(
                "ACK", via=self._via(b.peer), cseq=response.cseq.number
            )
        self._actions.append(Transmit(message=b.dialog.last_ack, peer=b.peer))

    # -- CANCEL ----------------------------------------------------------------------------

    def _on_cancel(self, request: SipRequest, tx: ServerTransaction, now: float) -> None:
        key = transaction_key(request)
        invite_key = (key[0], key[1], "INVITE")
        invite_tx = self._server_txs.get(invite_key)
        if invite_tx is None:
            self._respond(tx, request, 481, now)
            return
        self._respond(tx, request, 200, now)
        call = self._by_invite.get(invite_key)
        last = invite_tx.last_response
        if last is None or last.status < 200:
            tag = call.a.local_tag if call is not None else self._token(8)
            self._respond(invite_tx, invite_tx.request, 487, now, to_tag=tag)
        if call is not None and call.fire(CI.CANCEL):
            call.log.info("caller cancelled")
            self._cancel_callee(call, now)

    def _cancel_callee(self, call: Call, now: float) -> None:
        for branch in call.branches:
            if not branch.done:
                self._cancel_branch(call, branch, now)

    def _cancel_branch(self, call: Call, branch: Branch, now: float) -> None:
        if branch.cancelled:
            return
        if not branch.provisional:
            branch.cancel_pending = True  # RFC 3261 9.1: no CANCEL before a provisional
            return
        branch.cancel_pending = False
        branch.cancelled = True
        invite = branch.invite
        headers = [("Via", invite.header_values("Via")[0])]
        for key, value in invite.headers:
            name = canonical_name(key)
            if name in ("Max-Forwards", "From", "To", "Call-ID", "Route"):
                headers.append((name, value))
        headers.append(("CSeq", f"{invite.cseq.number} CANCEL"))
        cancel = SipRequest(method="CANCEL", uri=invite.uri, headers=with_body(headers, b"", None))

        def done(response: SipResponse | None, when: float) -> None:
            if response is None and not branch.done:
                # RFC 3261 9.1: no answer to the CANCEL either; the device is gone, and the
                # branch is over (a 487 would never come).
                branch.done = True
                branch.status = 408
                self._branches_over(call, when)

        self._send_request(cancel, branch.leg.peer, done, now)

    # -- in-dialog requests ----------------------------------------------------------------

    def _find_leg(self, request: SipRequest) -> tuple[Call, Leg] | None:
        found = self._dialogs.get((request.call_id, request.to.tag or ""))
        if found is None:
            return None
        _call, leg = found
        assert leg.dialog is not None
        if leg.dialog.remote_tag is not None and request.from_.tag != leg.dialog.remote_tag:
            return None
        return found

    def _on_dialog_ack(self, request: SipRequest, now: float) -> None:
        found = self._find_leg(request)
        if found is None:
            return  # an ACK for nothing we know: ACKs are never answered
        call, leg = found
        tx = leg.pending_ack
        if tx is not None and tx.request.cseq.number == request.cseq.number:
            self._server_outputs(tx, tx.ack_received(now), now)
            leg.pending_ack = None
        if leg is call.a:
            call.fire(CI.ACK)

    def _on_dialog_request(self, request: SipRequest, tx: ServerTransaction, now: float) -> None:
        found = self._find_leg(request)
        if found is None:
            self._respond(tx, request, 481, now)
            return
        call, leg = found
        assert leg.dialog is not None
        leg.dialog.check_remote_cseq(request)
        method = request.method
        if method == "BYE":
            self._on_bye(call, leg, request, tx, now)
        elif method == "INFO" and request.header("Record") is not None:
            if not _same_host(tx.peer.host, leg.peer.host):
                # The tags of a call are no secret (they pass through proxies and logs): a
                # Record is obeyed only from where this leg's messages come from.
                call.log.warning(
                    "Record from %s refused: the %s is at %s", tx.peer, leg.role, leg.peer
                )
                self._respond(tx, request, 403, now, reason="Forbidden (not from the call's peer)")
                return
            self._on_record_info(call, leg, request, tx, now)
        elif method == "INVITE" or method in RELAYED_IN_DIALOG:
            self._relay_in_dialog(call, leg, request, tx, now)
        else:
            self._respond(
                tx,
                request,
                405 if method in _methods(DIALOG_ALLOW) | _methods(ALLOW) else 501,
                now,
                headers=[("Allow", DIALOG_ALLOW)],
            )

    def _on_bye(
        self, call: Call, leg: Leg, request: SipRequest, tx: ServerTransaction, now: float
    ) -> None:
        assert leg.dialog is not None
        self._respond(tx, request, 200, now)
        leg.dialog.bye()
        call.log.info("%s hung up", leg.role)
        if not call.fire(CI.BYE):
            return
        call.end_reason = call.end_reason or f"{leg.role}_hangup"
        self._stop_recording(call, STOP_HANGUP)
        self._send_bye(call, call.other(leg), now)
        if call.byes_pending == 0:
            self._bye_done(call, now)

    def _send_bye(self, call: Call, leg: Leg, now: float) -> None:
        dialog = leg.dialog
        if dialog is None or dialog.terminated or dialog.remote_tag is None:
            return
        bye = dialog.request("BYE", via=self._via(leg.peer))
        dialog.bye()
        call.byes_pending += 1

        def done(_response: SipResponse | None, when: float) -> None:
            call.byes_pending -= 1
            if call.byes_pending == 0:
                self._bye_done(call, when)

        self._send_request(bye, leg.peer, done, now)

    def _bye_done(self, call: Call, now: float) -> None:
        if call.fire(CI.DONE) or call.state is C.ENDED:
            self._call_done(call, call.end_reason or "hangup")

    def _call_done(self, call: Call, reason: str) -> None:
        if call.ref not in self._calls:
            return
        # Only a recording of a call that ends some other way is still on here (the BYEs
        # and end_call stopped theirs with their own reason).
        self._stop_recording(call, STOP_HANGUP)
        call.state = C.ENDED
        del self._calls[call.ref]
        for leg in (call.a, call.b):
            if leg.dialog is not None:
                self._dialogs.pop((leg.dialog.call_id, leg.dialog.local_tag), None)
        self._actions.append(CallEnded(call=call.ref, reason=reason))
        call.log.info("ended (%s)", reason)

    def _relay_in_dialog(
        self, call: Call, leg: Leg, request: SipRequest, tx: ServerTransaction, now: float
    ) -> None:
        other = call.other(leg)
        if call.state not in ESTABLISHED or other.dialog is None or not other.dialog.confirmed:
            self._respond(tx, request, 491 if request.method == "INVITE" else 481, now)
            return
        invite = request.method == "INVITE"
        if invite:
            if leg.reinvite_pending or other.reinvite_pending:
                self._respond(tx, request, 491, now)
                return
            leg.reinvite_pending = True
        body, ctype = self._relay_sdp(call, request, towards=other)
        headers = tuple(
            (canonical_name(k), v)
            for k, v in request.headers
            if canonical_name(k) in PASSED_REQUEST_HEADERS
            or canonical_name(k) in ("Event", "Subscription-State")
        )
        relayed = other.dialog.request(
            request.method,
            via=self._via(other.peer),
            contact=self._contact(other.peer) if invite else None,
            headers=headers,
            body=body,
            content_type=ctype,
        )
        if invite:
            self._media_update(call)

        def done(response: SipResponse | None, when: float) -> None:
            if response is None:
                leg.reinvite_pending = False
                self._respond(tx, request, 408, when)
                return
            if response.status < 200:
                if response.status > 100 and invite:
                    self._respond(tx, request, response.status, when, reason=response.reason)
                return
            extra: list[tuple[str, str]] = []
            out_body, out_type = b"", None
            if invite:
                leg.reinvite_pending = False
                if response.success:
                    assert other.dialog is not None
                    ack = other.dialog.request(
                        "ACK", via=self._via(other.peer), cseq=relayed.cseq.number
                    )
                    self._actions.append(Transmit(message=ack, peer=other.peer))
                    out_body, out_type = self._relay_sdp(call, response, towards=leg)
                    extra.append(("Contact", self._contact(leg.peer)))
                    leg.pending_ack = tx
                    self._media_update(call)
            elif response.body:
                out_body, out_type = response.body, response.header("Content-Type")
            for key, value in response.headers:
                if canonical_name(key) in PASSED_RESPONSE_HEADERS:
                    extra.append((canonical_name(key), value))
            self._respond(
                tx,
                request,
                response.status,
                when,
                reason=response.reason,
                headers=extra,
                body=out_body,
                content_type=out_type,
            )

        self._send_request(relayed, other.peer, done, now)

    # -- INFO Record -----------------------------------------------------------------------

    def _on_record_info(
        self, call: Call, leg: Leg, request: SipRequest, tx: ServerTransaction, now: float
    ) -> None:
        value = (request.header("Record") or "").strip().lower()
        if value not in ("on", "off"):
            self._respond(tx, request, 400, now, reason="Bad Request (Record must be on or off)")
            return
        if call.state not in ESTABLISHED:
            self._respond(tx, request, 481, now, reason="Call Does Not Exist (not answered)")
            return
        if leg.policy == POLICY_NEVER:
            call.log.info("Record: %s from the %s refused: policy never", value, leg.role)
            self._respond(tx, request, 403, now, reason="Forbidden (recording not allowed)")
            return
        if value == "off" and call.forced:
            self._respond(tx, request, 403, now, reason="Forbidden (this call is always recorded)")
            return
        call.log.info("Record: %s from the %s", value, leg.role)
        if value == "off":
            self._respond(tx, request, 200, now)
            self._stop_recording(call, STOP_RECORD_OFF)
        elif call.recording:
            self._respond(tx, request, 200, now)  # already on (or being turned on)
        else:
            # Answered when the I/O layer says whether the recording started.
            call.pending_record = (tx, request)
            self._start_recording(call, "info")

    def _start_recording(self, call: Call, trigger: str) -> None:
        if call.recording:
            return
        call.recording = True
        call.segment += 1
        self._actions.append(
            StartRecording(
                call=call.ref,
                segment=call.segment,
                caller=call.a.party,
                callee=call.b.party,
                direction=call.direction,
                trigger=trigger,
                sip_call_id=call.a_invite.call_id,
                extra={"callee_call_id": call.b_invite.call_id},
            )
        )

    def _stop_recording(self, call: Call, reason: str) -> None:
        if not call.recording:
            return
        call.recording = False
        # A Record: on still waiting is answered: it was taken, and is now over.
        self._answer_pending_record(call, 200, None, self._now)
        self._actions.append(StopRecording(call=call.ref, reason=reason))

    def _answer_pending_record(
        self, call: Call, status: int, refusal: str | None, now: float
    ) -> None:
        pending, call.pending_record = call.pending_record, None
        if pending is None:
            return
        tx, request = pending
        if refusal is None:
            self._respond(tx, request, status, now)
            return
        self._respond(
            tx,
            request,
            status,
            now,
            reason=f"{reason_phrase(status)} (recording refused: {refusal})",
            headers=[("Warning", f'399 callrec "recording refused: {refusal}"')],
        )

    # -- what the I/O layer tells us of recordings -------------------------------------------

    def recording_started(self, ref: str, segment: int, now: float) -> None:
        """The engine opened the recording of ``segment``: a waiting Record: on gets 200."""
        self._now = now
        call = self._calls.get(ref)
        if call is None or call.segment != segment or not call.recording:
            return
        self._answer_pending_record(call, 200, None, now)

    def recording_refused(self, ref: str, segment: int, reason: str, now: float) -> None:
        """The engine refused (or failed) to record ``segment``, for ``reason`` (``busy``,
        ``disk_full``...): the call is not recorded, and a waiting Record: on is answered as
        :data:`REFUSAL_STATUS` says."""
        self._now = now
        call = self._calls.get(ref)
        if call is None or call.segment != segment or not call.recording:
            return
        call.recording = False
        call.log.warning("recording segment %d refused: %s", segment, reason)
        self._answer_pending_record(call, REFUSAL_STATUS.get(reason, 500), reason, now)

    def recording_stopped(self, ref: str, segment: int) -> None:
        """The engine ended ``segment`` on its own (``max_duration``, ``disk_full``...): the
        call is no longer recorded, and a new Record: on starts a new segment."""
        call = self._calls.get(ref)
        if call is not None and call.segment == segment and call.recording:
            call.recording = False

    # -- responses and transactions --------------------------------------------------------

    def _on_response(self, response: SipResponse, now: float) -> None:
        via = response.top_via
        entry = self._client_txs.get((via.branch or "", response.cseq.method))
        if entry is None:
            self._stray_response(response, now)
            return
        tx, handler = entry
        self._client_outputs(tx, handler, tx.receive_response(response, now), now)

    def _stray_response(self, response: SipResponse, now: float) -> None:
        """A 2xx to an INVITE whose transaction is gone: re-send the ACK if it is ours."""
        if response.cseq.method != "INVITE" or not response.success:
            return
        key = (response.call_id, response.from_.tag or "")
        found = self._dialogs.get(key)
        dialog = found[1].dialog if found is not None else self._late.get(key)
        if dialog is not None and dialog.last_ack is not None:
            self._actions.append(Transmit(message=dialog.last_ack, peer=dialog.peer))

    def _send_request(
        self, request: SipRequest, peer: Peer, handler: ResponseHandler, now: float
    ) -> None:
        tx = ClientTransaction(request, peer)
        self._client_txs[(tx.branch, request.method)] = (tx, handler)
        self._client_outputs(tx, handler, tx.start(now), now)

    def _client_outputs(
        self, tx: ClientTransaction, handler: ResponseHandler, outputs: list[Output], now: float
    ) -> None:
        for out in outputs:
            if isinstance(out, Send):
                self._actions.append(Transmit(message=out.message, peer=out.peer))
            elif isinstance(out, Deliver):
                handler(out.response, now)
            elif isinstance(out, TimedOut):
                handler(None, now)

    def _server_outputs(self, tx: ServerTransaction, outputs: list[Output], now: float) -> None:
        for out in outputs:
            if isinstance(out, Send):
                self._actions.append(Transmit(message=out.message, peer=out.peer))
            elif isinstance(out, TimedOut):
                self._server_timeout(tx, out.reason, now)

    def _server_timeout(self, tx: ServerTransaction, reason: str, now: float) -> None:
        if tx.request.method != "INVITE" or tx.last_response is None:
            return
        if not tx.last_response.success:
            return
        for call in list(self._calls.values()):
            for leg in (call.a, call.b):
                if leg.pending_ack is tx:
                    leg.pending_ack = None
                    call.log.warning("no ACK from the %s: hanging up", leg.role)
                    self.end_call(call.ref, "no_ack", now)
                    return

    def _respond(
        self,
        tx: ServerTransaction,
        request: SipRequest,
        status: int,
        now: float,
        *,
        reason: str | None = None,
        to_tag: str | None = None,
        headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
        content_type: str | None = None,
        copy_record_route: bool = False,
    ) -> None:
        if status >= 200 and to_tag is None and request.to.tag is None and status != 100:
            to_tag = self._token(8)
        response = make_response(
            request,
            status,
            reason,
            to_tag=to_tag,
            headers=[*headers, ("Server", self.config.user_agent)],
            body=body,
            content_type=content_type,
            copy_record_route=copy_record_route,
        )
        response = _with_received(response, tx.peer)
        self._server_outputs(tx, tx.respond(response, now), now)

    # -- our own addresses -----------------------------------------------------------------

    def _via(self, peer: Peer) -> str:
        address = self._local_address(peer)
        port = self.config.ports[peer.transport]
        host = f"[{address}]" if ":" in address else address
        return (
            f"SIP/2.0/{peer.transport.upper()} {host}:{port};branch=z9hG4bK{self._token(10)};rport"
        )

    def _contact_uri(self, peer: Peer, *, user: str = "callrec") -> str:
        uri = SipUri(
            user=user, host=self._local_address(peer), port=self.config.ports[peer.transport]
        )
        if peer.transport != "udp":
            uri = uri.with_params(transport=peer.transport)
        return uri.serialize()

    def _contact(self, peer: Peer) -> str:
        return f"<{self._contact_uri(peer)}>"


_Side = tuple[Account | None, str, CallParty]
#: One place a call is sent to: address, Request-URI, who answers there.
_Target = tuple[Peer, str, _Side]
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(entries: tuple[str, ...]) -> tuple[_Network, ...]:
    out: list[_Network] = []
    for entry in entries:
        if entry.strip():
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
    return tuple(out)


def _in_networks(host: str, networks: tuple[_Network, ...]) -> bool:
    ip = _ip(host) if networks else None
    if ip is None:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an address (an IPv4-mapped IPv6 one as IPv4); None for a name."""
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _same_host(a: str, b: str) -> bool:
    ia, ib = _ip(a), _ip(b)
    return ia == ib if ia is not None and ib is not None else a.lower() == b.lower()


def _accepts_sdp(request: SipRequest) -> bool:
    """Does the request's Accept (if it names any type) take application/sdp?"""
    ranges = [r.split(";", 1)[0].strip().lower() for r in request.header_values("Accept")]
    ranges = [r for r in ranges if r]
    return not ranges or any(r in (SDP, "application/*", "*/*") for r in ranges)


def _methods(allow: str) -> frozenset[str]:
    return frozenset(m.strip() for m in allow.split(","))


def best_branch(branches: list[Branch]) -> Branch:
    """The final response a forked call that failed everywhere answers with (RFC 3261
    16.7 step 6): a 6xx if there is one, else one of the lowest class, the first received."""
    failed = [b for b in branches if b.status >= 300]
    for branch in failed:
        if branch.status >= 600:
            return branch
    return min(failed, key=lambda b: b.status // 100) if failed else branches[0]


def _user(uri: str) -> str:
    try:
        return SipUri.parse(uri).user or ""
    except SipProtocolError:
        return ""


def _max_forwards(request: SipRequest) -> int:
    value = request.header("Max-Forwards")
    return int(value) if value is not None else MAX_FORWARDS


def _int_or(text: str | None, default: int) -> int:
    if text is None or not text.strip().isdigit():
        return default
    return int(text.strip())


def _reason(status: int) -> str:
    return reason_phrase(status)


def _clean_reason(text: str) -> str:
    return "".join(c if c.isprintable() and c not in "\r\n" else "?" for c in text)


def _with_received(response: SipResponse, peer: Peer) -> SipResponse:
    """RFC 3261 18.2.1 / RFC 3581: tell the sender where its request really came from."""
    values = response.header_values("Via")
    if not values:
        return response
    try:
        top = Via.parse(values[0])
    except SipProtocolError:
        return response
    changed = top
    if top.host != peer.host:
        changed = changed.with_params(received=peer.host)
    if top.param("rport") == "":
        changed = changed.with_params(rport=str(peer.port), received=peer.host)
    if changed is top:
        return response
    headers: list[tuple[str, str]] = []
    done = False
    for key, value in response.headers:
        if canonical_name(key) == "Via" and not done:
            rest = split_list(value)[1:]
            headers.append(("Via", ", ".join([changed.serialize(), *rest])))
            done = True
            continue
        headers.append((key, value))
    return response.with_headers(headers)
