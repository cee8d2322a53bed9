"""SIP messages and header values: RFC 3665 captures, round trips, framing, and a property
test: any bytes at all either parse or raise our own protocol error."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callrec.sip.errors import SipProtocolError
from callrec.sip.headers import CSeq, NameAddr, SipUri, Via, parse_auth, split_list
from callrec.sip.message import (
    SipRequest,
    SipResponse,
    StreamFramer,
    canonical_name,
    make_response,
    parse_message,
    with_body,
)
from callrec.sip.peer import Peer
from tests.sip.captures import load, names
from tests.support.sip import make_core

#: Captures written without folded lines: they round-trip byte for byte.
UNFOLDED = [n for n in names("rfc3665") if n not in ("reg-F2", "reg-F3", "call-F2", "call-F4")]


@pytest.mark.parametrize("name", names("rfc3665"))
def test_rfc3665_messages_parse(name: str) -> None:
    message = parse_message(load(f"rfc3665/{name}"))
    assert message.call_id
    assert message.top_via.transport == "TLS"
    assert message.from_.tag is not None
    assert parse_message(message.serialize()) == message


@pytest.mark.parametrize("name", UNFOLDED)
def test_rfc3665_round_trip_byte_for_byte(name: str) -> None:
    data = load(f"rfc3665/{name}")
    assert parse_message(data).serialize() == data


def test_rfc3665_session_messages() -> None:
    invite = parse_message(load("rfc3665/call-F1"))
    assert isinstance(invite, SipRequest)
    assert invite.uri == "sips:bob@biloxi.example.com"
    assert invite.from_.display_name == "Alice" and invite.from_.tag == "9fxced76sl"
    assert invite.content_type == "application/sdp" and len(invite.body) == 151
    ringing = parse_message(load("rfc3665/call-F10"))
    assert isinstance(ringing, SipResponse) and ringing.status == 180
    assert ringing.header_values("Record-Route") == [
        "<sips:ss2.biloxi.example.com;lr>",
        "<sips:ss1.atlanta.example.com;lr>",
    ]
    assert [v.branch for v in ringing.vias] == ["z9hG4bK721e4.1", "z9hG4bK2d4790.1", "z9hG4bK74bfa"]
    assert ringing.vias[2].param("received") == "192.0.2.101"
    ack = parse_message(load("rfc3665/call-F16"))
    assert isinstance(ack, SipRequest) and ack.cseq == CSeq(number=2, method="ACK")
    bye = parse_message(load("rfc3665/call-F19"))
    assert bye.to.tag == "9fxced76sl" and bye.from_.tag == "314159"


def test_builders() -> None:
    invite = parse_message(load("rfc3665/call-F1"))
    assert isinstance(invite, SipRequest)
    response = make_response(invite, 180, to_tag="314159", headers=[("Contact", "<sip:b@h>")])
    assert response.to.tag == "314159" and response.reason == "Ringing"
    assert [canonical_name(k) for k, _ in response.headers] == [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Length",
    ]
    trying = make_response(invite, 100, to_tag="x")
    assert trying.to.tag is None  # 100 Trying never creates a dialog
    headers = with_body([("Content-Length", "3"), ("X", "y")], b"body", "text/plain")
    assert headers == (("X", "y"), ("Content-Type", "text/plain"), ("Content-Length", "4"))


def test_header_values() -> None:
    assert split_list('a, "b, c" <sip:x>, <sip:y;p=1,2>') == [
        "a",
        '"b, c" <sip:x>',
        "<sip:y;p=1,2>",
    ]
    with pytest.raises(SipProtocolError, match="empty element"):
        split_list("a,,b")
    uri = SipUri.parse("sip:alice:pw@[2001:db8::1]:5070;transport=tcp;lr?subject=hi")
    assert (uri.user, uri.password, uri.host, uri.port) == ("alice", "pw", "[2001:db8::1]", 5070)
    assert uri.transport == "tcp" and uri.param("lr") == "" and uri.headers == "subject=hi"
    assert uri.serialize() == "sip:alice:pw@[2001:db8::1]:5070;transport=tcp;lr?subject=hi"
    for bad, message in [
        ("sip:host:99999", "port 99999 out of range"),
        ("sip:ho st", "whitespace"),
        ("http://x", "not a SIP URI"),
        ("sip:@host", "empty user part"),
        ("sip:[::1", "invalid IPv6 reference"),
    ]:
        with pytest.raises(SipProtocolError, match=message):
            SipUri.parse(bad)
    addr = NameAddr.parse('"A \\"B\\"" <sip:a@b>;tag=1;x')
    assert addr.display_name == 'A "B"' and addr.tag == "1" and addr.param("x") == ""
    assert NameAddr.parse(addr.serialize()) == addr
    via = Via.parse("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport")
    assert via.sent_by == "192.0.2.1:5060" and via.param("rport") == ""
    assert parse_auth('Digest realm="r", nonce="n", qop="auth,auth-int"') == (
        "Digest",
        {"realm": "r", "nonce": "n", "qop": "auth,auth-int"},
    )


def test_request_line_and_body_rules() -> None:
    base = (
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1"
        b"\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
    )
    # UDP: no Content-Length means the rest is the body; extra bytes after it are dropped.
    assert parse_message(base + b"\r\nhello").body == b"hello"
    assert parse_message(base + b"Content-Length: 2\r\n\r\nhello").body == b"he"
    # Bare LF line ends are accepted, as are leading CRLFs (RFC 3261 7.5).
    assert parse_message(b"\r\n\r\n" + base.replace(b"\r\n", b"\n") + b"\n").call_id == "c"
    with pytest.raises(SipProtocolError, match="without Content-Length"):
        parse_message(base + b"\r\n", stream=True)
    with pytest.raises(SipProtocolError, match="no empty line"):
        parse_message(base)
    with pytest.raises(SipProtocolError, match="invalid Max-Forwards"):
        parse_message(base + b"Max-Forwards: 256\r\n\r\n")
    with pytest.raises(SipProtocolError, match="invalid header line"):
        parse_message(base + b"Bad Header: x\r\n\r\n")


def test_stream_framer_cuts_messages_in_any_pieces() -> None:
    one = parse_message(load("rfc3665/call-F1")).serialize()
    two = parse_message(load("rfc3665/call-F19")).serialize()
    stream = b"\r\n\r\n" + one + two + b"\r\n"
    for size in (1, 7, len(stream)):
        framer = StreamFramer()
        out: list[bytes] = []
        for i in range(0, len(stream), size):
            framer.receive_data(stream[i : i + size])
            while (message := framer.next_message()) is not None:
                out.append(message)
        assert out == [one, two]
    framer = StreamFramer(max_message=100)
    framer.receive_data(b"X" * 200)
    with pytest.raises(SipProtocolError, match="too large"):
        framer.next_message()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_any_bytes_parse_or_raise_our_error(data: bytes) -> None:
    with contextlib.suppress(SipProtocolError):
        parse_message(data)


def _mutations() -> st.SearchStrategy[bytes]:
    seeds = [load(f"rfc3665/{n}") for n in names("rfc3665")]
    seeds += [load(f"rfc4475/{n}") for n in ("wsinv", "esc01", "intmeth", "inv2543", "escnull")]

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 6))):
            pos = draw(st.integers(0, len(data)))
            action = draw(st.sampled_from(["insert", "delete", "replace"]))
            chunk = draw(
                st.sampled_from(
                    [
                        b":",
                        b";",
                        b",",
                        b"<",
                        b">",
                        b'"',
                        b"\\",
                        b" ",
                        b"\r\n",
                        b"\x00",
                        b"=",
                        b"@",
                        b"%",
                        b"\xff",
                        b"9" * 12,
                        b"SIP/2.0",
                    ]
                )
            )
            if action == "insert":
                data[pos:pos] = chunk
            elif action == "delete":
                del data[pos : pos + len(chunk)]
            else:
                data[pos : pos + len(chunk)] = chunk
        return bytes(data)

    return mutate()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_mutated_messages_never_crash_parser_or_core(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipProtocolError:
        message = None
    if message is not None:
        # What parses, serialises into something that parses the same.
        assert parse_message(message.serialize()) == message
    core, _ = make_core()
    core.receive(data, Peer("udp", "192.0.2.99", 5060), 0.0)
    for action in core.pop_actions():
        if hasattr(action, "message"):
            wire = action.message.serialize()
            if message is None:
                # The 400 to what we could not parse echoes the sender's own header lines as
                # they came (RFC 4475): a status line, whole lines, the end of the header.
                assert wire.startswith(b"SIP/2.0 4") or wire.startswith(b"SIP/2.0 505")
                assert wire.endswith(b"\r\n\r\n") and b"\r\nVia: " in wire
                assert all(b"\r" not in line for line in wire.split(b"\r\n"))
            else:
                parse_message(wire)
    core.handle_timers(100.0)
