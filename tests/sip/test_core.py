"""The SIP core without any I/O: messages in, actions out, the clock passed in.

Call flows follow RFC 3665 (section 2.1 registration, 3.1 session establishment, 3.8/3.9
unsuccessful calls, CANCEL) with callrec in the middle as a B2BUA, and the recording side
of it: INFO Record on/off and the account policies.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from callrec.sip.auth import Challenge
from callrec.sip.core import SipCore
from callrec.sip.events import (
    Action,
    CallEnded,
    MediaUpdate,
    StartRecording,
    StopRecording,
    Transmit,
)
from callrec.sip.message import SipRequest, SipResponse, make_response, parse_message, with_body
from callrec.sip.peer import Peer
from callrec.sip.sdp import SessionDescription, audio_stream
from tests.sip.captures import load
from tests.support.sip import US, FakeMedia, account, make_core

ALICE = Peer("udp", "192.0.2.10", 5060)
BOB = Peer("udp", "192.0.2.20", 5062)
UPSTREAM = Peer("udp", "198.51.100.5", 5060)


def sdp(host: str, port: int, codecs: str = "8 0 101") -> bytes:
    lines = [
        "v=0",
        f"o=- 1 1 IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {codecs}",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=candidate:1 1 UDP 2130706431 10.0.0.1 8998 typ host",
        "m=video 9000 RTP/AVP 96",
        "a=rtpmap:96 VP8/90000",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class Phone:
    """Builds the requests one phone sends; remembers its dialog."""

    user: str
    peer: Peer
    password: str = "pw"
    cseq: int = 0
    tag: str = ""
    remote_tag: str | None = None
    call_id: str = ""
    branches: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def via(self) -> str:
        branch = f"z9hG4bK{self.user}{next(self.branches)}"
        return f"SIP/2.0/UDP {self.peer.host}:{self.peer.port};branch={branch}"

    def request(
        self,
        method: str,
        uri: str,
        to: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        via: str | None = None,
        cseq: int | None = None,
    ) -> SipRequest:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        to_tag = f";tag={self.remote_tag}" if self.remote_tag else ""
        hs = [
            ("Via", via or self.via()),
            ("Max-Forwards", "70"),
            (
                "From",
                f'"{self.user.title()}" <sip:{self.user}@{US}>;tag={self.tag or self.user + "tag"}',
            ),
            ("To", f"<sip:{to}@{US}>{to_tag}"),
            ("Call-ID", self.call_id or f"{self.user}-call@{self.peer.host}"),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<sip:{self.user}@{self.peer.host}:{self.peer.port}>"),
            *headers,
        ]
        return SipRequest(
            method=method,
            uri=uri,
            headers=with_body(hs, body, "application/sdp" if body else None),
            body=body,
        )


def messages(actions: Iterable[Action], peer: Peer | None = None) -> list[SipRequest | SipResponse]:
    """What went on the wire (to ``peer``), each re-parsed from its bytes."""
    return [
        parse_message(a.message.serialize())
        for a in actions
        if isinstance(a, Transmit) and (peer is None or a.peer == peer)
    ]


def feed(
    core: SipCore, message: SipRequest | SipResponse, peer: Peer, now: float = 0.0
) -> list[Action]:
    core.receive(message.serialize(), peer, now)
    return core.pop_actions()


def statuses(actions: Iterable[Action], peer: Peer) -> list[int]:
    return [m.status for m in messages(actions, peer) if isinstance(m, SipResponse)]


def authorize(phone: Phone, request: SipRequest, challenge: SipResponse) -> tuple[str, str]:
    name = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
    creds = Challenge.parse(challenge.header(name) or "").authorize(
        username=phone.user, password=phone.password, method=request.method, uri=request.uri
    )
    return ("Authorization" if challenge.status == 401 else "Proxy-Authorization", creds)


def register(core: SipCore, phone: Phone, *, now: float = 0.0, expires: int = 3600) -> SipResponse:
    uri = f"sip:{US}"
    first = phone.request("REGISTER", uri, phone.user, headers=[("Expires", str(expires))])
    challenge = messages(feed(core, first, phone.peer, now), phone.peer)[0]
    assert isinstance(challenge, SipResponse) and challenge.status == 401
    second = phone.request(
        "REGISTER",
        uri,
        phone.user,
        headers=[("Expires", str(expires)), authorize(phone, first, challenge)],
    )
    answer = messages(feed(core, second, phone.peer, now), phone.peer)[0]
    assert isinstance(answer, SipResponse)
    return answer


# -- registration (RFC 3665 2.1) ---------------------------------------------------------


def test_options_answered_with_200() -> None:
    core, _ = make_core()
    phone = Phone("alice", ALICE)
    out = messages(feed(core, phone.request("OPTIONS", f"sip:{US}", "callrec"), ALICE))
    assert len(out) == 1 and isinstance(out[0], SipResponse)
    assert out[0].status == 200
    assert "INFO" in (out[0].header("Allow") or "")
    assert out[0].to.tag is not None


def test_registration_with_digest_challenge() -> None:
    core, _ = make_core(accounts=[account("bob", "pw")])
    bob = Phone("bob", BOB)
    answer = register(core, bob, now=10.0)
    assert answer.status == 200
    assert answer.header_values("Contact") == [f"<sip:bob@{BOB.host}:{BOB.port}>;expires=3600"]
    [binding] = core.registrar.lookup("bob", 11.0)
    assert binding.peer == BOB
    # Expired bindings are gone.
    assert core.registrar.lookup("bob", 10.0 + 3601) == []


def test_registration_refusals() -> None:
    core, _ = make_core(accounts=[account("bob", "pw")], min_expires=60)
    wrong = Phone("bob", BOB, password="nope", branches=itertools.count(100))
    first = wrong.request("REGISTER", f"sip:{US}", "bob")
    challenge = messages(feed(core, first, BOB), BOB)[0]
    assert isinstance(challenge, SipResponse)
    second = wrong.request(
        "REGISTER", f"sip:{US}", "bob", headers=[authorize(wrong, first, challenge)]
    )
    assert statuses(feed(core, second, BOB), BOB) == [403]
    # A stale nonce gets a fresh challenge that says so.
    bob = Phone("bob", BOB)
    third = bob.request("REGISTER", f"sip:{US}", "bob", headers=[authorize(bob, first, challenge)])
    out = messages(feed(core, third, BOB, now=1000.0), BOB)[0]
    assert isinstance(out, SipResponse) and out.status == 401
    assert "stale=true" in (out.header("WWW-Authenticate") or "")
    # Too short an interval: 423 with Min-Expires.
    short = bob.request("REGISTER", f"sip:{US}", "bob", headers=[("Expires", "10")])
    challenge = messages(feed(core, short, BOB), BOB)[0]
    assert isinstance(challenge, SipResponse)
    retry = bob.request(
        "REGISTER",
        f"sip:{US}",
        "bob",
        headers=[("Expires", "10"), authorize(bob, short, challenge)],
    )
    out = messages(feed(core, retry, BOB), BOB)[0]
    assert isinstance(out, SipResponse) and out.status == 423
    assert out.header("Min-Expires") == "60"


def test_rfc3665_registration_messages_parse() -> None:
    f1 = parse_message(load("rfc3665/reg-F1"))
    f2 = parse_message(load("rfc3665/reg-F2"))
    f3 = parse_message(load("rfc3665/reg-F3"))
    f4 = parse_message(load("rfc3665/reg-F4"))
    assert isinstance(f2, SipResponse) and f2.status == 401
    challenge = Challenge.parse(f2.header("WWW-Authenticate") or "")
    assert (challenge.realm, challenge.qop, challenge.nonce) == (
        "atlanta.example.com",
        ("auth",),
        "ea9c8e88df84f1cec4341ae6cbe5a359",
    )
    assert f1.call_id == f3.call_id == f4.call_id
    assert f3.cseq.number == f1.cseq.number + 1
    from callrec.sip.auth import Credentials

    creds = Credentials.parse(f3.header("Authorization") or "")
    assert (creds.username, creds.uri) == ("bob", "sips:ss2.biloxi.example.com")


# -- calls (RFC 3665 3.1) ----------------------------------------------------------------


@dataclass
class CallSetup:
    core: SipCore
    media: FakeMedia
    alice: Phone
    bob: Phone
    invite: SipRequest  # what alice sent (with credentials)
    bob_invite: SipRequest  # what callrec sent bob
    answer: SipResponse  # the 200 alice got
    actions: list[Action]


def establish(
    *, alice_policy: str = "on_demand", bob_policy: str = "on_demand", ack: bool = True
) -> CallSetup:
    core, media = make_core(
        accounts=[account("alice", "pw", alice_policy), account("bob", "pw", bob_policy)]
    )
    alice, bob = Phone("alice", ALICE), Phone("bob", BOB)
    assert register(core, bob).status == 200
    offer = sdp(ALICE.host, 7078)
    first = alice.request("INVITE", f"sip:bob@{US}", "bob", body=offer)
    out = messages(feed(core, first, ALICE), ALICE)
    assert [m.status for m in out if isinstance(m, SipResponse)] == [100, 407]
    challenge = out[1]
    assert isinstance(challenge, SipResponse)
    # The ACK of the 407 is absorbed by the INVITE server transaction.
    ack407 = alice.request(
        "ACK", first.uri, "bob", via=first.header_values("Via")[0], cseq=first.cseq.number
    )
    ack407 = ack407.with_headers(
        [(k, challenge.header("To") or "") if k == "To" else (k, v) for k, v in ack407.headers]
    )
    assert messages(feed(core, ack407, ALICE)) == []
    invite = alice.request(
        "INVITE", f"sip:bob@{US}", "bob", body=offer, headers=[authorize(alice, first, challenge)]
    )
    actions = feed(core, invite, ALICE)
    assert statuses(actions, ALICE) == [100]
    [bob_invite] = messages(actions, BOB)
    assert isinstance(bob_invite, SipRequest)
    actions = []
    ringing = make_response(
        bob_invite, 180, to_tag="bobtag", headers=[("Contact", f"<sip:bob@{BOB.host}:{BOB.port}>")]
    )
    actions += feed(core, ringing, BOB)
    answer_sdp = sdp(BOB.host, 9078, codecs="8 101")
    ok = make_response(
        bob_invite,
        200,
        to_tag="bobtag",
        headers=[("Contact", f"<sip:bob@{BOB.host}:{BOB.port}>")],
        body=answer_sdp,
        content_type="application/sdp",
    )
    actions += feed(core, ok, BOB)
    to_alice = [m for m in messages(actions, ALICE) if isinstance(m, SipResponse)]
    assert [m.status for m in to_alice] == [180, 200]
    answer = to_alice[1]
    alice.remote_tag = answer.to.tag
    if ack:
        actions += feed(
            core,
            alice.request("ACK", f"sip:callrec@{US}:5060", "bob", cseq=invite.cseq.number),
            ALICE,
        )
    bob.call_id = bob_invite.call_id
    bob.tag = "bobtag"
    bob.remote_tag = bob_invite.from_.tag
    return CallSetup(core, media, alice, bob, invite, bob_invite, answer, actions)


def test_session_establishment_through_callrec() -> None:
    s = establish()
    # callrec is a B2BUA: bob's leg is a dialog of its own ...
    assert s.bob_invite.call_id != s.invite.call_id
    assert s.bob_invite.from_.tag != s.invite.from_.tag
    assert s.bob_invite.uri == f"sip:bob@{BOB.host}:{BOB.port}"
    assert s.bob_invite.header("Proxy-Authorization") is None  # our credentials stay here
    assert s.bob_invite.from_.display_name == "Alice"
    # ... whose SDP points at callrec's port facing bob, with only what we can record.
    offer = SessionDescription.parse(s.bob_invite.body)
    stream = audio_stream(offer)
    assert (stream.address, stream.port) == (US, 40001)
    assert stream.codecs == {8: "PCMA", 0: "PCMU"} and stream.event_payload_type == 101
    assert [m.port for m in offer.media] == [40001, 0]  # the video stream is declined
    assert b"candidate" not in s.bob_invite.body
    # Alice's answer points at callrec's port facing her.
    answer = audio_stream(SessionDescription.parse(s.answer.body))
    assert (answer.address, answer.port, answer.codecs) == (US, 40000, {8: "PCMA"})
    # The 180 and the 200 carry the same To tag; the relay learns both sides.
    [update] = [a for a in s.actions if isinstance(a, MediaUpdate)]
    assert update.caller == (ALICE.host, 7078) and update.callee == (BOB.host, 9078)
    assert (update.codec, update.payload_type) == ("PCMA", 8)
    # callrec ACKed bob's 200 itself.
    acks = [m for m in messages(s.actions, BOB) if isinstance(m, SipRequest)]
    assert [m.method for m in acks] == ["ACK"]
    assert acks[0].to.tag == "bobtag" and acks[0].uri == f"sip:bob@{BOB.host}:{BOB.port}"
    # Nothing is recorded until someone asks.
    assert not any(isinstance(a, StartRecording) for a in s.actions)


def test_bye_from_callee_ends_both_legs() -> None:
    s = establish()
    out = feed(s.core, s.bob.request("BYE", f"sip:callrec@{US}:5060", "alice"), BOB)
    assert statuses(out, BOB) == [200]
    [bye] = messages(out, ALICE)
    assert isinstance(bye, SipRequest) and bye.method == "BYE"
    assert bye.call_id == s.invite.call_id and bye.to.tag == s.invite.from_.tag
    assert bye.uri == f"sip:alice@{ALICE.host}:{ALICE.port}"
    assert not any(isinstance(a, CallEnded) for a in out)
    done = feed(s.core, make_response(bye, 200), ALICE)
    assert [a.reason for a in done if isinstance(a, CallEnded)] == ["callee_hangup"]
    assert s.core.calls == {}
    # A late INFO about the call: no such dialog.
    late = s.alice.request("INFO", f"sip:callrec@{US}:5060", "bob", headers=[("Record", "on")])
    assert statuses(feed(s.core, late, ALICE), ALICE) == [481]


def test_callee_busy_is_relayed() -> None:
    core, _media = make_core(
        accounts=[account("alice", "pw"), account("bob", "pw")], authenticate_invites=False
    )
    alice, bob = Phone("alice", ALICE), Phone("bob", BOB)
    register(core, bob)
    out = feed(
        core, alice.request("INVITE", f"sip:bob@{US}", "bob", body=sdp(ALICE.host, 7078)), ALICE
    )
    [bob_invite] = messages(out, BOB)
    assert isinstance(bob_invite, SipRequest)
    out = feed(core, make_response(bob_invite, 486, to_tag="b"), BOB)
    assert statuses(out, ALICE) == [486]
    assert [m.method for m in messages(out, BOB) if isinstance(m, SipRequest)] == ["ACK"]
    assert [a.reason for a in out if isinstance(a, CallEnded)] == ["rejected_486"]


def test_unknown_and_unreachable_callees() -> None:
    core, _ = make_core(
        accounts=[account("alice", "pw"), account("bob", "pw")], authenticate_invites=False
    )
    alice = Phone("alice", ALICE)
    out = feed(
        core, alice.request("INVITE", f"sip:carol@{US}", "carol", body=sdp(ALICE.host, 7078)), ALICE
    )
    assert statuses(out, ALICE) == [100, 404]
    out = feed(
        core, alice.request("INVITE", f"sip:bob@{US}", "bob", body=sdp(ALICE.host, 7078)), ALICE
    )
    assert statuses(out, ALICE) == [100, 480]  # an account, but not registered


def test_invite_without_sdp_or_ports() -> None:
    core, media = make_core(
        accounts=[account("alice", "pw"), account("bob", "pw")], authenticate_invites=False
    )
    alice, bob = Phone("alice", ALICE), Phone("bob", BOB)
    register(core, bob)
    out = feed(core, alice.request("INVITE", f"sip:bob@{US}", "bob"), ALICE)
    assert statuses(out, ALICE) == [100, 488]
    media.full = True
    out = feed(
        core, alice.request("INVITE", f"sip:bob@{US}", "bob", body=sdp(ALICE.host, 7078)), ALICE
    )
    assert statuses(out, ALICE) == [100, 503]
    media.full = False
    srtp = sdp(ALICE.host, 7078).replace(b"RTP/AVP 8 0 101", b"RTP/SAVP 8 0 101")
    out = feed(core, alice.request("INVITE", f"sip:bob@{US}", "bob", body=srtp), ALICE)
    assert statuses(out, ALICE) == [100, 488]


def test_cancel_before_answer() -> None:
    core, _ = make_core(
        accounts=[account("alice", "pw"), account("bob", "pw")], authenticate_invites=False
    )
    alice, bob = Phone("alice", ALICE), Phone("bob", BOB)
    register(core, bob)
    invite = alice.request("INVITE", f"sip:bob@{US}", "bob", body=sdp(ALICE.host, 7078))
    [bob_invite] = messages(feed(core, invite, ALICE), BOB)
    assert isinstance(bob_invite, SipRequest)
    feed(core, make_response(bob_invite, 180, to_tag="b"), BOB)
    cancel = SipRequest(
        method="CANCEL",
        uri=invite.uri,
        headers=with_body(
            [
                ("Via", invite.header_values("Via")[0]),
                ("Max-Forwards", "70"),
                ("From", invite.header("From") or ""),
                ("To", invite.header("To") or ""),
                ("Call-ID", invite.call_id),
                ("CSeq", f"{invite.cseq.number} CANCEL"),
            ],
            b"",
            None,
        ),
    )
    out = feed(core, cancel, ALICE)
    assert sorted(statuses(out, ALICE)) == [200, 487]
    [bob_cancel] = messages(out, BOB)
    assert isinstance(bob_cancel, SipRequest) and bob_cancel.method == "CANCEL"
    assert bob_cancel.top_via.branch == bob_invite.top_via.branch
    feed(core, make_response(bob_cancel, 200), BOB)
    out = feed(core, make_response(bob_invite, 487, to_tag="b"), BOB)
    assert [a.reason for a in out if isinstance(a, CallEnded)] == ["cancelled"]
    # A CANCEL for nothing: 481.
    stray = alice.request("CANCEL", f"sip:bob@{US}", "bob")
    assert statuses(feed(core, stray, ALICE), ALICE) == [481]


def test_retransmitted_invite_is_absorbed() -> None:
    core, media = make_core(
        accounts=[account("alice", "pw"), account("bob", "pw")], authenticate_invites=False
    )
    alice, bob = Phone("alice", ALICE), Phone("bob", BOB)
    register(core, bob)
    invite = alice.request("INVITE", f"sip:bob@{US}", "bob", body=sdp(ALICE.host, 7078))
    feed(core, invite, ALICE)
    again = feed(core, invite, ALICE)
    assert statuses(again, ALICE) == [100]  # the last response, resent
    assert messages(again, BOB) == []
    assert len(media.calls) == 1


def test_client_retransmissions_then_timeout() -> None:
    core, _ = make_core(
        accounts=[account("alice", "pw"), account("bob", "pw")], authenticate_invites=False
    )
    alice, bob = Phone("alice", ALICE), Phone("bob", BOB)
    register(core, bob)
    feed(core, alice.request("INVITE", f"sip:bob@{US}", "bob", body=sdp(ALICE.host, 7078)), ALICE)
    sends = []
    now = 0.0
    while (deadline := core.next_deadline()) is not None and deadline < 40:
        now = deadline
        core.handle_timers(now)
        sends.append((now, [m for m in messages(core.pop_actions())]))
    # Timer A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; Timer B at 32 s ends it with a 408.
    retransmits = [
        t for t, ms in sends if any(isinstance(m, SipRequest) and m.method == "INVITE" for m in ms)
    ]
    assert retransmits == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    final = [(t, m) for t, ms in sends for m in ms if isinstance(m, SipResponse)]
    # The 408 goes to alice at 32 s (then again, Timer G, as she never ACKs it).
    assert final[0][0] == 32.0 and {m.status for _, m in final} == {408}
    assert core.calls == {}


# -- INFO Record and policies -------------------------------------------------------------


def info(phone: Phone, value: str, *, to: str) -> SipRequest:
    return phone.request("INFO", f"sip:callrec@{US}:5060", to, headers=[("Record", value)])


def started(core: SipCore, start: StartRecording, now: float = 0.0) -> list[Action]:
    """The I/O layer's word that the engine opened the segment."""
    core.recording_started(start.call, start.segment, now)
    return core.pop_actions()


def test_info_record_on_off_from_either_side() -> None:
    s = establish()
    out = feed(s.core, info(s.alice, "on", to="bob"), ALICE)
    # Answered only once the recording engine has opened the recording.
    assert statuses(out, ALICE) == []
    assert messages(out, BOB) == []  # never relayed
    [start] = [a for a in out if isinstance(a, StartRecording)]
    assert (start.segment, start.trigger, start.direction) == (1, "info", "out")
    assert (start.caller.number, start.callee.number) == ("alice", "bob")
    assert start.caller.account == "alice" and start.sip_call_id == s.invite.call_id
    assert statuses(started(s.core, start), ALICE) == [200]
    out = feed(s.core, info(s.alice, "on", to="bob"), ALICE)  # already on: fine, no new segment
    assert statuses(out, ALICE) == [200] and not any(isinstance(a, StartRecording) for a in out)
    out = feed(s.core, info(s.bob, "OFF", to="alice"), BOB)
    assert statuses(out, BOB) == [200]
    assert [a.reason for a in out if isinstance(a, StopRecording)] == ["record_off"]
    out = feed(s.core, info(s.bob, "on", to="alice"), BOB)
    [start] = [a for a in out if isinstance(a, StartRecording)]
    assert start.segment == 2
    assert statuses(started(s.core, start), BOB) == [200]
    out = feed(s.core, info(s.bob, "toggle", to="alice"), BOB)
    assert statuses(out, BOB) == [400]
    # Hanging up stops the open segment.
    out = feed(s.core, s.alice.request("BYE", f"sip:callrec@{US}:5060", "bob"), ALICE)
    assert [a.reason for a in out if isinstance(a, StopRecording)] == ["hangup"]


@pytest.mark.parametrize(
    ("reason", "status"),
    [("busy", 503), ("disk_full", 503), ("unsupported_codec", 488), ("internal", 500)],
)
def test_a_refused_recording_is_answered_and_forgotten(reason: str, status: int) -> None:
    s = establish()
    out = feed(s.core, info(s.alice, "on", to="bob"), ALICE)
    [start] = [a for a in out if isinstance(a, StartRecording)]
    s.core.recording_refused(start.call, start.segment, reason, 0.0)
    [answer] = messages(s.core.pop_actions(), ALICE)
    assert isinstance(answer, SipResponse) and answer.status == status
    assert answer.reason.endswith(f"(recording refused: {reason})")
    assert answer.header("Warning") == f'399 callrec "recording refused: {reason}"'
    # The core does not believe it records: the next Record: on is a new attempt.
    out = feed(s.core, info(s.alice, "on", to="bob"), ALICE)
    assert [a.segment for a in out if isinstance(a, StartRecording)] == [2]
    # Word about the old segment changes nothing now.
    s.core.recording_started(start.call, start.segment, 0.0)
    assert s.core.pop_actions() == []


def test_record_off_while_the_recording_opens() -> None:
    s = establish()
    [start] = [
        a
        for a in feed(s.core, info(s.alice, "on", to="bob"), ALICE)
        if isinstance(a, StartRecording)
    ]
    out = feed(s.core, info(s.alice, "off", to="bob"), ALICE)
    # Both INFOs are answered; the I/O layer finishes the segment once it is open.
    assert statuses(out, ALICE) == [200, 200]
    assert [a.reason for a in out if isinstance(a, StopRecording)] == ["record_off"]
    assert started(s.core, start) == []


def test_the_engine_ending_a_segment_lets_the_next_record_on_start_one() -> None:
    s = establish()
    [start] = [
        a
        for a in feed(s.core, info(s.alice, "on", to="bob"), ALICE)
        if isinstance(a, StartRecording)
    ]
    started(s.core, start)
    s.core.recording_stopped(start.call, start.segment)  # max_duration, disk_full ...
    out = feed(s.core, info(s.alice, "on", to="bob"), ALICE)
    assert [a.segment for a in out if isinstance(a, StartRecording)] == [2]


def test_every_stop_reason_of_the_core_is_one_of_the_engine() -> None:
    from callrec.engine import STOP_REASONS
    from callrec.sip import core as core_module

    reasons = {core_module.STOP_HANGUP, core_module.STOP_RECORD_OFF, "shutdown", "no_ack"}
    assert reasons <= STOP_REASONS
    # ... and what the core hangs up with on its own (end_call) is among them.
    s = establish(bob_policy="always")
    s.core.end_call(next(iter(s.core.calls)), "shutdown", 1.0)
    assert [a.reason for a in s.core.pop_actions() if isinstance(a, StopRecording)] == ["shutdown"]


def test_info_for_no_dialog_is_481() -> None:
    s = establish()
    stranger = Phone("mallory", Peer("udp", "192.0.2.66", 5060), remote_tag="nosuchtag")
    assert statuses(feed(s.core, info(stranger, "on", to="bob"), stranger.peer), stranger.peer) == [
        481
    ]
    # Right Call-ID, wrong tag: still no such dialog.
    s.alice.remote_tag = "wrong"
    assert statuses(feed(s.core, info(s.alice, "on", to="bob"), ALICE), ALICE) == [481]


def test_policy_never_refuses_with_403() -> None:
    s = establish(alice_policy="never")
    out = feed(s.core, info(s.alice, "on", to="bob"), ALICE)
    assert statuses(out, ALICE) == [403]
    assert not any(isinstance(a, StartRecording) for a in out)
    # The other party's own policy still applies to its own Record key.
    out = feed(s.core, info(s.bob, "on", to="alice"), BOB)
    [start] = [a for a in out if isinstance(a, StartRecording)]
    assert statuses(started(s.core, start), BOB) == [200]


def test_policy_always_records_from_the_answer() -> None:
    s = establish(bob_policy="always")
    [start] = [a for a in s.actions if isinstance(a, StartRecording)]
    assert start.trigger == "always" and start.segment == 1
    assert statuses(feed(s.core, info(s.alice, "off", to="bob"), ALICE), ALICE) == [403]
    assert statuses(feed(s.core, info(s.alice, "on", to="bob"), ALICE), ALICE) == [200]
    out = feed(s.core, s.bob.request("BYE", f"sip:callrec@{US}:5060", "alice"), BOB)
    assert [a.reason for a in out if isinstance(a, StopRecording)] == ["hangup"]


def test_info_before_answer_is_481() -> None:
    core, _ = make_core(
        accounts=[account("alice", "pw"), account("bob", "pw")], authenticate_invites=False
    )
    alice, bob = Phone("alice", ALICE), Phone("bob", BOB)
    register(core, bob)
    invite = alice.request("INVITE", f"sip:bob@{US}", "bob", body=sdp(ALICE.host, 7078))
    [bob_invite] = messages(feed(core, invite, ALICE), BOB)
    assert isinstance(bob_invite, SipRequest)
    out = feed(core, make_response(bob_invite, 180, to_tag="b"), BOB)
    ringing = next(m for m in messages(out, ALICE) if isinstance(m, SipResponse))
    alice.remote_tag = ringing.to.tag
    assert statuses(feed(core, info(alice, "on", to="bob"), ALICE), ALICE) == [481]


def test_other_info_is_relayed() -> None:
    s = establish()
    dtmf = s.alice.request(
        "INFO",
        f"sip:callrec@{US}:5060",
        "bob",
        headers=[("Content-Type", "application/dtmf-relay")],
    )
    dtmf = SipRequest(
        method="INFO",
        uri=dtmf.uri,
        headers=with_body(dtmf.headers, b"Signal=5\r\nDuration=160\r\n", "application/dtmf-relay"),
        body=b"Signal=5\r\nDuration=160\r\n",
    )
    out = feed(s.core, dtmf, ALICE)
    [relayed] = messages(out, BOB)
    assert isinstance(relayed, SipRequest) and relayed.method == "INFO"
    assert relayed.body == dtmf.body and relayed.call_id == s.bob_invite.call_id
    out = feed(s.core, make_response(relayed, 200), BOB)
    assert statuses(out, ALICE) == [200]


def test_reinvite_hold_is_relayed_with_our_sdp() -> None:
    s = establish()
    hold = sdp(ALICE.host, 7078).replace(b"a=fmtp:101 0-16", b"a=fmtp:101 0-16\r\na=sendonly")
    out = feed(s.core, s.alice.request("INVITE", f"sip:callrec@{US}:5060", "bob", body=hold), ALICE)
    [relayed] = messages(out, BOB)
    assert isinstance(relayed, SipRequest) and relayed.method == "INVITE"
    stream = audio_stream(SessionDescription.parse(relayed.body))
    assert (stream.port, stream.direction) == (40001, "sendonly")
    reply = sdp(BOB.host, 9078, codecs="8 101").replace(
        b"a=fmtp:101 0-16", b"a=fmtp:101 0-16\r\na=recvonly"
    )
    out = feed(
        s.core,
        make_response(
            relayed,
            200,
            headers=[("Contact", f"<sip:bob@{BOB.host}>")],
            body=reply,
            content_type="application/sdp",
        ),
        BOB,
    )
    assert [m.method for m in messages(out, BOB) if isinstance(m, SipRequest)] == ["ACK"]
    [ok] = [m for m in messages(out, ALICE) if isinstance(m, SipResponse)]
    assert ok.status == 200
    assert audio_stream(SessionDescription.parse(ok.body)).port == 40000
    # Alice's ACK of our 200 is absorbed.
    ack = s.alice.request("ACK", f"sip:callrec@{US}:5060", "bob", cseq=s.alice.cseq)
    assert messages(feed(s.core, ack, ALICE)) == []


def test_missing_ack_hangs_up_both_legs() -> None:
    s = establish(ack=False)
    now = 0.0
    byes: list[SipRequest] = []
    while (deadline := s.core.next_deadline()) is not None and deadline < 40 and not byes:
        now = deadline
        s.core.handle_timers(now)
        byes = [
            m
            for m in messages(s.core.pop_actions())
            if isinstance(m, SipRequest) and m.method == "BYE"
        ]
    assert sorted(b.call_id for b in byes) == sorted([s.invite.call_id, s.bob_invite.call_id])
    assert now == pytest.approx(32.0)


# -- outbound proxy mode -----------------------------------------------------------------


def test_proxy_mode_relays_registration_and_calls() -> None:
    core, _ = make_core(upstream=UPSTREAM, accounts=[account("alice", "", "always")])
    alice = Phone("alice", ALICE)
    reg = alice.request("REGISTER", "sip:pbx.example.com", "alice", headers=[("Expires", "600")])
    [up] = messages(feed(core, reg, ALICE), UPSTREAM)
    assert isinstance(up, SipRequest)
    assert up.uri == "sip:pbx.example.com" and up.call_id == reg.call_id
    [contact] = up.header_values("Contact")
    assert contact.startswith("<sip:cr-") and f"@{US}:5060>" in contact
    # The upstream's challenge goes back unchanged.
    challenge = make_response(
        up, 401, headers=[("WWW-Authenticate", 'Digest realm="pbx", nonce="n1"')]
    )
    out = messages(feed(core, challenge, UPSTREAM), ALICE)
    assert isinstance(out[0], SipResponse) and out[0].status == 401
    assert out[0].header("WWW-Authenticate") == 'Digest realm="pbx", nonce="n1"'
    # The credentials go up untouched; upstream's 200 binds our token to alice's contact.
    reg2 = alice.request(
        "REGISTER", "sip:pbx.example.com", "alice", headers=[("Authorization", "Digest x")]
    )
    [up2] = messages(feed(core, reg2, ALICE), UPSTREAM)
    assert isinstance(up2, SipRequest) and up2.header("Authorization") == "Digest x"
    token_uri = up2.header_values("Contact")[0][1:].split(">")[0]
    ok = make_response(up2, 200, headers=[("Contact", f"<{token_uri}>;expires=300")])
    [back] = messages(feed(core, ok, UPSTREAM), ALICE)
    assert isinstance(back, SipResponse) and back.status == 200
    assert back.header_values("Contact") == [f"<sip:alice@{ALICE.host}:{ALICE.port}>;expires=300"]
    # An incoming call to the token reaches alice; her policy records it from the answer.
    caller = Phone("carol", UPSTREAM)
    token_user = token_uri.split(":")[1].split("@")[0]
    invite = caller.request("INVITE", token_uri, token_user, body=sdp(UPSTREAM.host, 6000))
    out = feed(core, invite, UPSTREAM)
    [to_alice] = messages(out, ALICE)
    assert (
        isinstance(to_alice, SipRequest) and to_alice.uri == f"sip:alice@{ALICE.host}:{ALICE.port}"
    )
    out = feed(
        core,
        make_response(
            to_alice,
            200,
            to_tag="a",
            headers=[("Contact", f"<sip:alice@{ALICE.host}>")],
            body=sdp(ALICE.host, 7078),
            content_type="application/sdp",
        ),
        ALICE,
    )
    [start] = [a for a in out if isinstance(a, StartRecording)]
    assert start.direction == "in" and start.callee.account == "alice" and start.trigger == "always"
    # An outgoing call goes upstream with the phone's credentials passed along.
    call = alice.request(
        "INVITE",
        "sip:5551234@pbx.example.com",
        "5551234",
        body=sdp(ALICE.host, 7080),
        headers=[("Proxy-Authorization", "Digest y")],
    )
    [up_invite] = messages(feed(core, call, ALICE), UPSTREAM)
    assert isinstance(up_invite, SipRequest)
    assert up_invite.uri == "sip:5551234@pbx.example.com"
    assert up_invite.header("Proxy-Authorization") == "Digest y"
    # The upstream's 407 reaches the phone with its challenge.
    out = feed(
        core,
        make_response(
            up_invite,
            407,
            to_tag="u",
            headers=[("Proxy-Authenticate", 'Digest realm="pbx", nonce="n2"')],
        ),
        UPSTREAM,
    )
    [refused] = [m for m in messages(out, ALICE) if isinstance(m, SipResponse) and m.status >= 200]
    assert (
        refused.status == 407
        and refused.header("Proxy-Authenticate") == 'Digest realm="pbx", nonce="n2"'
    )


def test_ringing_forever_is_given_up_after_timer_c() -> None:
    core, _ = make_core(
        accounts=[account("alice", "pw"), account("bob", "pw")], authenticate_invites=False
    )
    alice, bob = Phone("alice", ALICE), Phone("bob", BOB)
    register(core, bob)
    invite = alice.request("INVITE", f"sip:bob@{US}", "bob", body=sdp(ALICE.host, 7078))
    [bob_invite] = messages(feed(core, invite, ALICE), BOB)
    assert isinstance(bob_invite, SipRequest)
    feed(core, make_response(bob_invite, 180, to_tag="b"), BOB, now=1.0)
    out: list[Action] = []
    while (deadline := core.next_deadline()) is not None and deadline <= 181.0:
        core.handle_timers(deadline)
        out += core.pop_actions()
    assert 408 in statuses(out, ALICE)
    [cancel] = [m for m in messages(out, BOB) if isinstance(m, SipRequest)]
    assert cancel.method == "CANCEL"
    done = feed(core, make_response(bob_invite, 487, to_tag="b"), BOB, now=182.0)
    assert [a.reason for a in done if isinstance(a, CallEnded)] == ["cancelled"]


def test_invite_with_another_body_type_is_415() -> None:
    core, _ = make_core(authenticate_invites=False, accounts=[account("user", "pw")])
    bob = Phone("user", BOB)
    register(core, bob)
    core.receive(load("rfc4475/invut"), ALICE, 0.0)  # RFC 4475 3.3.3: 415 with Accept
    out = [m for m in messages(core.pop_actions(), ALICE) if isinstance(m, SipResponse)]
    assert [m.status for m in out] == [100, 415]
    assert out[1].header("Accept") == "application/sdp"
