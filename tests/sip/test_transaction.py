"""Transaction machines and dialogs, driven by hand with a fake clock."""

from __future__ import annotations

import pytest

from callrec.sip.dialog import DIALOG_TABLE, Dialog, DialogState
from callrec.sip.errors import SipProtocolError
from callrec.sip.message import SipRequest, SipResponse, make_response, parse_message
from callrec.sip.peer import Peer
from callrec.sip.transaction import (
    INVITE_CLIENT,
    INVITE_SERVER,
    NON_INVITE_CLIENT,
    NON_INVITE_SERVER,
    ClientTransaction,
    Deliver,
    Send,
    ServerTransaction,
    State,
    TimedOut,
    transaction_key,
)
from tests.sip.captures import load

UDP = Peer("udp", "192.0.2.1", 5060)
TCP = Peer("tcp", "192.0.2.1", 5060)


def invite() -> SipRequest:
    message = parse_message(load("rfc3665/call-F1"))
    assert isinstance(message, SipRequest)
    return message


def options() -> SipRequest:
    message = parse_message(load("rfc4475/lwsdisp"))
    assert isinstance(message, SipRequest)
    return message


def run_timers(
    tx: ClientTransaction | ServerTransaction, until: float
) -> list[tuple[float, object]]:
    out: list[tuple[float, object]] = []
    while (deadline := tx.next_deadline()) is not None and deadline <= until:
        out += [(deadline, o) for o in tx.on_timer(deadline)]
    return out


def test_tables_only_name_real_states() -> None:
    for table in (INVITE_CLIENT, NON_INVITE_CLIENT, INVITE_SERVER, NON_INVITE_SERVER):
        for (state, _), new in table.items():
            assert state is not State.TERMINATED  # nothing leaves the end
            assert isinstance(new, State)
    assert set(DIALOG_TABLE.values()) <= set(DialogState)


def test_invite_client_timer_a_b() -> None:
    tx = ClientTransaction(invite(), UDP)
    assert [type(o) for o in tx.start(0.0)] == [Send]
    events = run_timers(tx, 40.0)
    sends = [t for t, o in events if isinstance(o, Send)]
    assert sends == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert [(t, type(o)) for t, o in events if isinstance(o, TimedOut)] == [(32.0, TimedOut)]
    assert tx.terminated


def test_invite_client_failure_acks_and_absorbs() -> None:
    request = invite()
    tx = ClientTransaction(request, UDP)
    tx.start(0.0)
    assert [type(o) for o in tx.receive_response(make_response(request, 180, to_tag="t"), 0.1)] == [
        Deliver
    ]
    assert run_timers(tx, 10.0) == []  # a provisional stops Timer A and B
    busy = make_response(request, 486, to_tag="t")
    out = tx.receive_response(busy, 11.0)
    assert [type(o) for o in out] == [Send, Deliver]
    ack = out[0]
    assert isinstance(ack, Send) and isinstance(ack.message, SipRequest)
    assert ack.message.method == "ACK" and ack.message.to.tag == "t"
    assert ack.message.top_via.branch == request.top_via.branch
    assert ack.message.cseq.number == request.cseq.number
    # A retransmitted 486 is ACKed again and not delivered twice.
    assert [type(o) for o in tx.receive_response(busy, 12.0)] == [Send]
    run_timers(tx, 11.0 + 32.0)  # Timer D
    assert tx.terminated


def test_invite_client_2xx_goes_to_the_user_every_time() -> None:
    request = invite()
    tx = ClientTransaction(request, UDP)
    tx.start(0.0)
    ok = make_response(request, 200, to_tag="t")
    assert [type(o) for o in tx.receive_response(ok, 1.0)] == [Deliver]
    assert [type(o) for o in tx.receive_response(ok, 1.5)] == [Deliver]  # the TU re-ACKs
    assert tx.state is State.ACCEPTED
    run_timers(tx, 1.0 + 32.0)  # Timer M
    assert tx.terminated


def test_non_invite_client_timer_e_f_and_k() -> None:
    request = options()
    tx = ClientTransaction(request, UDP)
    tx.start(0.0)
    events = run_timers(tx, 40.0)
    sends = [t for t, o in events if isinstance(o, Send)]
    assert sends[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]  # doubling, capped at T2 = 4 s
    assert any(isinstance(o, TimedOut) for _, o in events) and tx.terminated
    tx = ClientTransaction(request, UDP)
    tx.start(0.0)
    out = tx.receive_response(make_response(request, 200), 0.2)
    assert [type(o) for o in out] == [Deliver]
    assert tx.receive_response(make_response(request, 200), 0.3) == []
    run_timers(tx, 10.0)  # Timer K = T4
    assert tx.terminated


def test_reliable_transport_never_retransmits() -> None:
    tx = ClientTransaction(invite(), TCP)
    tx.start(0.0)
    events = run_timers(tx, 40.0)
    assert [type(o) for _, o in events] == [TimedOut]


def test_invite_server_failure_retransmits_until_ack() -> None:
    request = invite()
    tx = ServerTransaction(request, UDP)
    assert [type(o) for o in tx.respond(make_response(request, 100), 0.0)] == [Send]
    # A retransmitted INVITE gets the last response again.
    assert [type(o) for o in tx.receive_request(request, 0.2)] == [Send]
    tx.respond(make_response(request, 486, to_tag="t"), 1.0)
    events = run_timers(tx, 5.0)
    assert [t for t, o in events if isinstance(o, Send)] == [1.5, 2.5, 4.5]  # Timer G
    ack = SipRequest(method="ACK", uri=request.uri, headers=request.headers)
    assert tx.receive_request(ack, 5.0) == []
    assert tx.state is State.CONFIRMED
    assert tx.receive_request(request, 5.1) == []  # absorbed now
    run_timers(tx, 5.0 + 5.0)  # Timer I
    assert tx.terminated


def test_invite_server_2xx_until_ack_or_timeout() -> None:
    request = invite()
    tx = ServerTransaction(request, UDP)
    tx.respond(make_response(request, 200, to_tag="t"), 0.0)
    events = run_timers(tx, 2.0)
    assert [t for t, o in events if isinstance(o, Send)] == [0.5, 1.5]
    assert tx.ack_received(2.0) == []
    assert tx.next_deadline() == 32.0  # only Timer L is left
    tx2 = ServerTransaction(request, UDP)
    tx2.respond(make_response(request, 200, to_tag="t"), 0.0)
    events = run_timers(tx2, 40.0)
    assert [str(o.reason) for _, o in events if isinstance(o, TimedOut)] == ["no ACK"]


def test_non_invite_server_absorbs_and_lingers() -> None:
    request = options()
    tx = ServerTransaction(request, UDP)
    assert tx.receive_request(request, 0.1) == []  # nothing to resend yet
    tx.respond(make_response(request, 200), 0.2)
    assert [type(o) for o in tx.receive_request(request, 0.3)] == [Send]
    run_timers(tx, 0.2 + 32.0)  # Timer J
    assert tx.terminated


def test_transaction_keys() -> None:
    request = invite()
    assert transaction_key(request) == (
        "z9hG4bK74bf9",
        "client.atlanta.example.com:5061",
        "INVITE",
    )
    old = parse_message(load("rfc4475/inv2543"))
    assert transaction_key(old)[0].startswith("2543:inv2543.1717@ift.client.example.com:None:56")


def test_dialog_uac_learns_tag_routes_and_target() -> None:
    request = invite()
    dialog = Dialog.as_uac(request, peer=UDP)
    assert dialog.state is DialogState.EARLY and dialog.remote_tag is None
    ringing = parse_message(load("rfc3665/call-F10"))
    ok = parse_message(load("rfc3665/call-F13"))
    assert isinstance(ringing, SipResponse) and isinstance(ok, SipResponse)
    dialog.response_received(ringing)
    assert dialog.remote_tag == "314159"
    assert dialog.route_set == (
        "<sips:ss1.atlanta.example.com;lr>",
        "<sips:ss2.biloxi.example.com;lr>",
    )
    dialog.response_received(ok)
    assert dialog.confirmed and dialog.remote_target == "sips:bob@client.biloxi.example.com"
    bye = dialog.request("BYE", via="SIP/2.0/TLS client.atlanta.example.com:5061;branch=z9hG4bKx")
    # As RFC 3665 F19's mirror: routes in order, CSeq up, tags both ways.
    assert bye.uri == "sips:bob@client.biloxi.example.com"
    assert bye.header_values("Route") == list(dialog.route_set)
    assert bye.cseq.number == 2 and bye.to.tag == "314159" and bye.from_.tag == "9fxced76sl"
    ack = dialog.request("ACK", via="SIP/2.0/TLS h;branch=z9hG4bKy", cseq=1)
    assert ack.cseq.number == 1 and dialog.local_seq == 2


def test_dialog_uas_checks_remote_cseq() -> None:
    request = invite()
    dialog = Dialog.as_uas(request, local_tag="mine", peer=UDP)
    dialog.answered()
    later = SipRequest(
        method="INFO",
        uri=request.uri,
        headers=tuple((k, "5 INFO") if k == "CSeq" else (k, v) for k, v in request.headers),
    )
    dialog.check_remote_cseq(later)
    with pytest.raises(SipProtocolError) as info:
        dialog.check_remote_cseq(later)
    assert info.value.status == 500
    dialog.bye()
    assert dialog.terminated
