"""SDP anchoring, digest authentication and the registrar, each on its own."""

from __future__ import annotations

import pytest

from callrec.sip.auth import Challenge, Credentials, DigestAuthenticator, digest_response, ha1
from callrec.sip.errors import SipProtocolError
from callrec.sip.message import SipRequest, with_body
from callrec.sip.peer import Peer
from callrec.sip.registrar import IntervalTooBrief, Registrar
from callrec.sip.sdp import SdpError, SessionDescription, anchor, audio_stream

OFFER = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844527 IN IP4 10.0.0.5\r\n"
    b"s=-\r\n"
    b"c=IN IP4 10.0.0.5\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 97 9 8 0 96 101\r\n"
    b"a=rtpmap:97 iLBC/8000\r\n"
    b"a=fmtp:97 mode=20\r\n"
    b"a=rtpmap:9 G722/8000\r\n"
    b"a=rtpmap:96 opus/48000/2\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=rtcp:49171\r\n"
    b"a=ice-ufrag:abcd\r\n"
    b"a=candidate:1 1 UDP 2130706431 10.0.0.5 49170 typ host\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
    b"m=video 51372 RTP/AVP 97\r\n"
    b"c=IN IP4 10.0.0.6\r\n"
    b"a=rtpmap:97 H264/90000\r\n"
)


def test_sdp_round_trip_and_audio_stream() -> None:
    sdp = SessionDescription.parse(OFFER)
    assert sdp.serialize() == OFFER
    stream = audio_stream(sdp)
    assert (stream.address, stream.port, stream.direction) == ("10.0.0.5", 49170, "sendrecv")
    assert stream.codecs == {9: "G722", 8: "PCMA", 0: "PCMU"}  # in the offer's order
    assert stream.event_payload_type == 101
    assert stream.first_codec == (9, "G722")


def test_anchor_keeps_what_we_record_and_points_at_us() -> None:
    rewritten = anchor(SessionDescription.parse(OFFER), address="192.0.2.1", port=40000)
    text = rewritten.serialize().decode()
    assert "m=audio 40000 RTP/AVP 9 8 0 101\r\n" in text
    assert "c=IN IP4 192.0.2.1\r\n" in text and "10.0.0.5" not in text
    assert "o=alice 2890844526 2890844527 IN IP4 192.0.2.1\r\n" in text
    for gone in ("iLBC", "opus", "mode=20", "a=rtcp:", "ice-ufrag", "candidate"):
        assert gone not in text
    assert "a=fmtp:101 0-16" in text and "a=ptime:20" in text and "a=sendrecv" in text
    assert "m=video 0 RTP/AVP 97" in text and "10.0.0.6" not in text
    again = audio_stream(rewritten)
    assert (again.address, again.port) == ("192.0.2.1", 40000)


def test_g726_g729_and_g723_are_recordable() -> None:
    """Codecs beyond G.711 and G.722 phones offer: G.726 by its rtpmap only (it has no static
    type), G.729 and G.723.1 by their static types, with or without an rtpmap."""
    offer = SessionDescription.parse(
        OFFER.replace(b"RTP/AVP 97 9 8 0 96 101", b"RTP/AVP 112 2 18 4 113 101").replace(
            b"a=rtpmap:97 iLBC/8000\r\n",
            b"a=rtpmap:112 G726-32/8000\r\na=rtpmap:18 G729/8000\r\n"
            b"a=rtpmap:113 AAL2-G726-24/8000\r\n",
        )
    )

    stream = audio_stream(offer)

    # Type 2 without an rtpmap is no longer G.726 (RFC 3551 withdrew it): not offered.
    assert stream.codecs == {112: "G726-32", 18: "G729", 4: "G723", 113: "AAL2-G726-24"}
    assert stream.first_codec == (112, "G726-32")
    text = anchor(offer, address="192.0.2.1", port=40000).serialize().decode()
    assert "m=audio 40000 RTP/AVP 112 18 4 113 101\r\n" in text
    assert "a=rtpmap:112 G726-32/8000" in text and "a=rtpmap:18 G729/8000" in text


def test_hold_and_refusals() -> None:
    hold = SessionDescription.parse(OFFER.replace(b"c=IN IP4 10.0.0.5", b"c=IN IP4 0.0.0.0"))
    assert audio_stream(hold).address is None
    with pytest.raises(SdpError, match="no codec we can record"):
        anchor(
            SessionDescription.parse(OFFER.replace(b"RTP/AVP 97 9 8 0 96 101", b"RTP/AVP 97 96")),
            address="192.0.2.1",
            port=1,
        )
    with pytest.raises(SdpError, match="not plain RTP"):
        audio_stream(SessionDescription.parse(OFFER.replace(b"RTP/AVP 97", b"RTP/SAVP 97")))
    with pytest.raises(SdpError, match="does not start with v=0"):
        SessionDescription.parse(b"o=x\r\n")
    with pytest.raises(SdpError) as info:
        SessionDescription.parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n")
    assert info.value.status == 488


def test_digest_rfc2617_example() -> None:
    # RFC 2617 section 3.5: the response to the example challenge.
    key = ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    response = digest_response(
        algorithm="MD5",
        ha1_hex=key,
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_authenticator_round_trip(algorithm: str) -> None:
    auth = DigestAuthenticator("callrec", secret=b"k", nonce_lifetime=60)
    challenge = Challenge.parse(auth.challenge(100.0, algorithm=algorithm))
    assert challenge.algorithm == algorithm and challenge.qop == ("auth",)
    header = challenge.authorize(username="201", password="pw", method="REGISTER", uri="sip:x")
    assert Credentials.parse(header).username == "201"

    def lookup(user: str, alg: str) -> str | None:
        return ha1(alg, user, "callrec", "pw") if user == "201" else None

    ok = auth.verify(header, method="REGISTER", now=130.0, lookup=lookup)
    assert ok.ok and ok.username == "201"
    assert auth.verify(header, method="INVITE", now=130.0, lookup=lookup).reason == "wrong password"
    assert auth.verify(header, method="REGISTER", now=200.0, lookup=lookup).stale
    other = DigestAuthenticator("callrec", secret=b"other")
    assert (
        other.verify(header, method="REGISTER", now=130.0, lookup=lookup).reason == "not our nonce"
    )
    assert auth.verify(None, method="REGISTER", now=1.0, lookup=lookup).reason == "no credentials"
    bad = auth.verify("Basic abc", method="REGISTER", now=1.0, lookup=lookup)
    assert not bad.ok and "unsupported authentication scheme" in bad.reason


def register_request(
    contact: str, *, expires: str | None = None, cseq: int = 1, call_id: str = "c1"
) -> SipRequest:
    headers = [
        ("Via", "SIP/2.0/UDP 192.0.2.5;branch=z9hG4bK1"),
        ("From", "<sip:201@x>;tag=1"),
        ("To", "<sip:201@x>"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} REGISTER"),
        ("Contact", contact),
    ]
    if expires is not None:
        headers.append(("Expires", expires))
    return SipRequest(method="REGISTER", uri="sip:x", headers=with_body(headers, b"", None))


def test_registrar_rules() -> None:
    reg = Registrar(min_expires=60, max_expires=3600)
    peer = Peer("udp", "192.0.2.5", 5060)
    [b] = reg.register(
        register_request("<sip:201@192.0.2.5>;expires=7200"), aor="201", peer=peer, now=0.0
    )
    assert b.expires_in(0.0) == 3600 and b.token.startswith("cr-")
    assert reg.by_token(b.token, 1.0) == b
    with pytest.raises(IntervalTooBrief):
        reg.register(
            register_request("<sip:201@192.0.2.5>", expires="30", cseq=2),
            aor="201",
            peer=peer,
            now=1.0,
        )
    with pytest.raises(SipProtocolError) as info:
        reg.register(register_request("<sip:201@192.0.2.5>", cseq=1), aor="201", peer=peer, now=1.0)
    assert info.value.status == 500  # out of order
    two = reg.register(
        register_request("<sip:201@192.0.2.6>", cseq=3), aor="201", peer=peer, now=2.0
    )
    assert len(two) == 2
    with pytest.raises(SipProtocolError, match="Contact: \\* needs Expires: 0"):
        reg.register(register_request("*", cseq=4), aor="201", peer=peer, now=3.0)
    assert (
        reg.register(register_request("*", expires="0", cseq=5), aor="201", peer=peer, now=3.0)
        == []
    )
    assert reg.lookup("201", 4.0) == []
