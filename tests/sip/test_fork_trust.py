"""Issue 19 items 1-7 in the sans-I/O core: forking to every contact of an account, the
authenticated account as the caller's number, trunks trusted by address, calls to phones
only from the upstream, INFO Record only from the leg's own peer, Allow and REGISTER checks.
"""

from __future__ import annotations

from callrec.sip.core import ALLOW, DIALOG_ALLOW, SipCore
from callrec.sip.events import CallEnded, StartRecording
from callrec.sip.message import SipRequest, SipResponse, make_response
from callrec.sip.peer import Peer
from tests.sip.test_core import (
    ALICE,
    BOB,
    UPSTREAM,
    Phone,
    authorize,
    feed,
    messages,
    register,
    sdp,
    statuses,
)
from tests.support.sip import US, account, make_core

DESK = BOB
MOBILE = Peer("udp", "192.0.2.21", 5064)
TRUNK = Peer("udp", "203.0.113.9", 5060)


def forked_call(**config: object) -> tuple[SipCore, Phone, SipRequest, SipRequest, SipRequest]:
    core, _ = make_core(
        accounts=[account("alice", "pw", "always"), account("bob", "pw")],
        authenticate_invites=False,
        **config,
    )
    register(core, Phone("bob", DESK))
    register(core, Phone("bob", MOBILE))
    alice = Phone("alice", ALICE)
    invite = alice.request("INVITE", f"sip:bob@{US}", "bob", body=sdp(ALICE.host, 7078))
    out = feed(core, invite, ALICE)
    [to_desk] = messages(out, DESK)
    [to_mobile] = messages(out, MOBILE)
    assert isinstance(to_desk, SipRequest) and isinstance(to_mobile, SipRequest)
    return core, alice, invite, to_desk, to_mobile


def test_a_call_forks_to_every_contact_and_the_first_answer_wins() -> None:
    core, _alice, _invite, to_desk, to_mobile = forked_call()
    assert to_desk.uri == f"sip:bob@{DESK.host}:{DESK.port}"
    assert to_mobile.uri == f"sip:bob@{MOBILE.host}:{MOBILE.port}"
    assert to_desk.call_id != to_mobile.call_id  # each branch is a dialog of its own
    assert to_desk.header("Allow") == DIALOG_ALLOW
    feed(core, make_response(to_desk, 180, to_tag="d"), DESK)
    feed(core, make_response(to_mobile, 180, to_tag="m"), MOBILE)
    ok = make_response(
        to_mobile,
        200,
        to_tag="m",
        headers=[("Contact", f"<sip:bob@{MOBILE.host}:{MOBILE.port}>")],
        body=sdp(MOBILE.host, 9000, codecs="8"),
        content_type="application/sdp",
    )
    out = feed(core, ok, MOBILE)
    assert 200 in statuses(out, ALICE)
    # The mobile gets its ACK; the desk phone, still ringing, its CANCEL.
    assert [m.method for m in messages(out, MOBILE) if isinstance(m, SipRequest)] == ["ACK"]
    [cancel] = [m for m in messages(out, DESK) if isinstance(m, SipRequest)]
    assert cancel.method == "CANCEL" and cancel.top_via.branch == to_desk.top_via.branch
    [start] = [a for a in out if isinstance(a, StartRecording)]
    assert start.callee.address == MOBILE.host
    # The desk phone answers anyway, crossing the CANCEL: ACKed and hung up at once.
    late = make_response(
        to_desk,
        200,
        to_tag="d",
        headers=[("Contact", f"<sip:bob@{DESK.host}:{DESK.port}>")],
        body=sdp(DESK.host, 9100, codecs="8"),
        content_type="application/sdp",
    )
    out = feed(core, late, DESK)
    assert [m.method for m in messages(out, DESK) if isinstance(m, SipRequest)] == ["ACK", "BYE"]
    assert statuses(out, ALICE) == []  # the caller sees none of it
    assert len(core.calls) == 1
    # Its retransmitted 2xx gets the ACK again, and no second BYE.
    again = feed(core, late, DESK)
    assert [m.method for m in messages(again, DESK) if isinstance(m, SipRequest)] == ["ACK"]


def test_a_forked_call_refused_everywhere_answers_the_best_response() -> None:
    core, _alice, _invite, to_desk, to_mobile = forked_call()
    out = feed(core, make_response(to_desk, 486, to_tag="d"), DESK)
    assert statuses(out, ALICE) == []  # the mobile is still to answer
    out = feed(core, make_response(to_mobile, 603, to_tag="m"), MOBILE)
    assert statuses(out, ALICE) == [603]  # RFC 3261 16.7: a 6xx beats a 4xx
    assert [a.reason for a in out if isinstance(a, CallEnded)] == ["rejected_603"]
    # Both busy: 486.
    core, _alice, _invite, to_desk, to_mobile = forked_call()
    feed(core, make_response(to_desk, 486, to_tag="d"), DESK)
    out = feed(core, make_response(to_mobile, 486, to_tag="m"), MOBILE)
    assert statuses(out, ALICE) == [486]


def test_the_caller_cancelling_cancels_every_branch() -> None:
    core, _alice, invite, to_desk, to_mobile = forked_call()
    feed(core, make_response(to_desk, 180, to_tag="d"), DESK)
    cancel = SipRequest(
        method="CANCEL",
        uri=invite.uri,
        headers=(
            *[
                (k, v)
                for k, v in invite.headers
                if k in ("Via", "From", "To", "Call-ID", "Max-Forwards")
            ],
            ("CSeq", f"{invite.cseq.number} CANCEL"),
            ("Content-Length", "0"),
        ),
    )
    out = feed(core, cancel, ALICE)
    assert sorted(statuses(out, ALICE)) == [200, 487]
    assert [m.method for m in messages(out, DESK) if isinstance(m, SipRequest)] == ["CANCEL"]
    assert messages(out, MOBILE) == []  # no CANCEL before its provisional (RFC 3261 9.1)
    out = feed(core, make_response(to_mobile, 180, to_tag="m"), MOBILE)
    assert [m.method for m in messages(out, MOBILE) if isinstance(m, SipRequest)] == ["CANCEL"]
    feed(core, make_response(to_desk, 487, to_tag="d"), DESK)
    out = feed(core, make_response(to_mobile, 487, to_tag="m"), MOBILE)
    assert [a.reason for a in out if isinstance(a, CallEnded)] == ["cancelled"]


def test_the_caller_is_the_authenticated_account_not_from() -> None:
    core, _ = make_core(accounts=[account("203", "pw"), account("bob", "pw")])
    register(core, Phone("bob", BOB))
    phone = Phone("203", ALICE)
    offer = sdp(ALICE.host, 7078)
    first = phone.request("INVITE", f"sip:bob@{US}", "bob", body=offer)
    first = first.with_headers(
        [
            (k, '"Front desk" <sip:999@192.0.2.1>;tag=t') if k == "From" else (k, v)
            for k, v in first.headers
        ]
    )
    challenge = messages(feed(core, first, ALICE), ALICE)[1]
    assert isinstance(challenge, SipResponse) and challenge.status == 407
    invite = first.with_headers(
        [*first.headers[:-1], authorize(phone, first, challenge), first.headers[-1]]
    )
    invite = invite.with_headers(
        [
            (k, "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKsecond") if k == "Via" else (k, v)
            for k, v in invite.headers
        ]
    )
    [to_bob] = messages(feed(core, invite, ALICE), BOB)
    assert isinstance(to_bob, SipRequest)
    ok = make_response(
        to_bob,
        200,
        to_tag="b",
        headers=[("Contact", f"<sip:bob@{BOB.host}>")],
        body=sdp(BOB.host, 9000, codecs="8"),
        content_type="application/sdp",
    )
    feed(core, ok, BOB)
    [call] = core.calls.values()
    assert call.a.party.number == "203" and call.a.party.account == "203"
    assert call.a.party.name == "Front desk"  # the From display name is kept
    assert call.direction == "out"


def test_a_trusted_trunk_is_not_challenged_and_calls_in() -> None:
    core, _ = make_core(accounts=[account("bob", "pw")], trusted_peers=("203.0.113.0/24",))
    register(core, Phone("bob", BOB))
    trunk = Phone("5551234", TRUNK)
    out = feed(
        core, trunk.request("INVITE", f"sip:bob@{US}", "bob", body=sdp(TRUNK.host, 6000)), TRUNK
    )
    assert statuses(out, TRUNK) == [100]  # no 407
    [to_bob] = messages(out, BOB)
    assert isinstance(to_bob, SipRequest) and to_bob.method == "INVITE"
    [call] = core.calls.values()
    assert call.direction == "in" and call.a.party.number == "5551234"
    # The same INVITE from an address not on the list is challenged.
    other = Phone("5551234", Peer("udp", "198.51.100.77", 5060))
    out = feed(
        core,
        other.request("INVITE", f"sip:bob@{US}", "bob", body=sdp("198.51.100.77", 6000)),
        Peer("udp", "198.51.100.77", 5060),
    )
    assert statuses(out, Peer("udp", "198.51.100.77", 5060)) == [100, 407]


def test_proxy_mode_takes_calls_to_phones_only_from_the_upstream() -> None:
    core, _ = make_core(upstream=UPSTREAM, accounts=[account("alice", "")])
    alice = Phone("alice", ALICE)
    [up] = messages(feed(core, alice.request("REGISTER", "sip:pbx", "alice"), ALICE), UPSTREAM)
    assert isinstance(up, SipRequest)
    token_uri = up.header_values("Contact")[0][1:].split(">")[0]
    feed(
        core, make_response(up, 200, headers=[("Contact", f"<{token_uri}>;expires=300")]), UPSTREAM
    )
    token_user = token_uri.split(":")[1].split("@")[0]
    stranger = Peer("udp", "127.0.0.3", 5060)
    out = feed(
        core,
        Phone("mallory", stranger).request(
            "INVITE", token_uri, token_user, body=sdp(stranger.host, 6000)
        ),
        stranger,
    )
    assert statuses(out, stranger) == [100, 403]
    assert messages(out, ALICE) == [] and core.calls == {}
    out = feed(
        core,
        Phone("carol", UPSTREAM).request(
            "INVITE", token_uri, token_user, body=sdp(UPSTREAM.host, 6000)
        ),
        UPSTREAM,
    )
    assert [m.method for m in messages(out, ALICE) if isinstance(m, SipRequest)] == ["INVITE"]


def test_info_record_is_obeyed_only_from_the_legs_own_address() -> None:
    from tests.sip.test_core import establish, info

    s = establish()
    spoofer = Peer("udp", "127.0.0.2", ALICE.port)
    out = feed(s.core, info(s.alice, "on", to="bob"), spoofer)
    assert statuses(out, spoofer) == [403]
    assert not any(isinstance(a, StartRecording) for a in out)
    out = feed(s.core, info(s.alice, "on", to="bob"), ALICE)
    assert any(isinstance(a, StartRecording) for a in out)


def test_message_outside_a_call_is_405_and_allow_does_not_list_it() -> None:
    core, _ = make_core()
    phone = Phone("alice", ALICE)
    [answer] = messages(feed(core, phone.request("MESSAGE", f"sip:bob@{US}", "bob"), ALICE))
    assert isinstance(answer, SipResponse) and answer.status == 405
    assert answer.header("Allow") == ALLOW and "MESSAGE" not in ALLOW
    [options] = messages(feed(core, phone.request("OPTIONS", f"sip:{US}", "callrec"), ALICE))
    assert isinstance(options, SipResponse) and options.header("Allow") == ALLOW


def test_register_with_a_contact_that_is_not_sip_is_400() -> None:
    core, _ = make_core(accounts=[account("bob", "pw")])
    bob = Phone("bob", BOB)
    for contact, expires in (
        ("<name:John_Smith>", "60"),
        ("<tel:+15551234>", "60"),
        ("<sip:bob@192.0.2.20>", "soon"),
        ("<sip:bob@192.0.2.20>;expires=-1", "60"),
    ):
        request = bob.request("REGISTER", f"sip:{US}", "bob", headers=[("Expires", expires)])
        request = request.with_headers(
            [(k, contact) if k == "Contact" else (k, v) for k, v in request.headers]
        )
        assert statuses(feed(core, request, BOB), BOB) == [400], contact
    assert core.registrar.lookup("bob", 0.0) == []


def test_a_callee_503_reaches_the_caller_as_500() -> None:
    core, _alice, _invite, to_desk, to_mobile = forked_call()
    feed(core, make_response(to_desk, 503, headers=[("Retry-After", "60")], to_tag="d"), DESK)
    out = feed(core, make_response(to_mobile, 503, to_tag="m"), MOBILE)
    [final] = [m for m in messages(out, ALICE) if isinstance(m, SipResponse)]
    assert final.status == 500 and final.header("Retry-After") is None


def test_an_invite_that_accepts_no_sdp_is_406() -> None:
    from tests.sip.captures import load

    core, _ = make_core(authenticate_invites=False, accounts=[account("user", "pw")])
    register(core, Phone("user", BOB))
    core.receive(load("rfc4475/sdp01"), ALICE, 0.0)  # RFC 4475 3.3.12: 406 (or 400)
    out = [m for m in messages(core.pop_actions(), ALICE) if isinstance(m, SipResponse)]
    assert [m.status for m in out] == [100, 406]


def test_a_branch_that_answers_neither_invite_nor_cancel_is_given_up() -> None:
    core, _alice, _invite, to_desk, to_mobile = forked_call()
    feed(core, make_response(to_desk, 180, to_tag="d"), DESK)
    feed(core, make_response(to_mobile, 180, to_tag="m"), MOBILE)
    ok = make_response(
        to_mobile,
        200,
        to_tag="m",
        headers=[("Contact", f"<sip:bob@{MOBILE.host}:{MOBILE.port}>")],
        body=sdp(MOBILE.host, 9000, codecs="8"),
        content_type="application/sdp",
    )
    feed(core, ok, MOBILE)
    [call] = core.calls.values()
    desk = next(b for b in call.branches if b.leg.peer == DESK)
    assert desk.cancelled and not desk.done
    # The desk phone went away: its CANCEL times out (64*T1), and the branch is over.
    now = 0.0
    while (deadline := core.next_deadline()) is not None and deadline <= 40.0:
        now = deadline
        core.handle_timers(now)
        core.pop_actions()
    assert desk.done and call.winner is not None and call.b.peer == MOBILE


def test_the_core_says_which_tcp_connections_a_registration_or_a_call_uses() -> None:
    core, _ = make_core(accounts=[account("bob", "pw")])
    tcp_bob = Peer("tcp", BOB.host, 40123)
    assert not core.uses(tcp_bob, 0.0)
    assert register(core, Phone("bob", tcp_bob), expires=600).status == 200
    assert core.uses(tcp_bob, 1.0)  # the idle timeout must not close it
    assert not core.uses(Peer("tcp", BOB.host, 40124), 1.0)
    assert not core.uses(tcp_bob, 601.0)  # the registration expired
