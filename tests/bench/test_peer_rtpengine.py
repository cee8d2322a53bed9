"""The rtpengine peer of the ingest benchmark: its ng framing, SDP and pcap reading, and
one small run through a real rtpengine when Debian's rtpengine-daemon is installed."""

from __future__ import annotations

import importlib
import shutil
import socket
import struct
from pathlib import Path
from types import ModuleType

import pytest

from callrec.sim.audioloop import AudioLoop
from callrec.sim.loadrun import LoadError, LoadOptions
from callrec.sim.senders import run_async

BENCHMARKS = Path(__file__).resolve().parent.parent.parent / "benchmarks"


@pytest.fixture()
def peer(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("peer_rtpengine")


def test_an_ng_reply_with_its_keys_out_of_order_is_read(peer: ModuleType) -> None:
    # rtpengine writes "sdp" after "result" and "recordings" before both, not sorted.
    cookie, reply = peer.ng_decode(b"a1-7 d6:result2:ok3:sdp4:v=0\n10:recordingsl3:x.pee")
    assert cookie == "a1-7"
    assert reply == {"result": "ok", "sdp": "v=0\n", "recordings": ["x.p"]}
    assert peer.ng_encode("c", {"command": "ping"}) == b"c d7:command4:pinge"
    with pytest.raises(LoadError):
        peer.ng_decode(b"no-space")


def test_the_audio_address_is_the_audio_sections(peer: ModuleType) -> None:
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
        "m=audio 30018 RTP/AVP 8\r\nc=IN IP4 127.0.0.1\r\na=rtcp:30019\r\n"
        "m=video 30020 RTP/AVP 96\r\nc=IN IP4 10.9.9.9\r\n"
    )
    assert peer.sdp_audio_address(sdp) == ("127.0.0.1", 30018)
    assert peer.sdp_audio_address(peer.offer_sdp("G722", 4000, 1)) == ("127.0.0.1", 4000)
    assert "a=rtpmap:9 G722/8000" in peer.offer_sdp("G722", 4000, 1)
    with pytest.raises(LoadError):
        peer.sdp_audio_address("v=0\r\nm=video 1 RTP/AVP 96\r\n")


def _ip_udp(payload: bytes) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 0, 0, 64, 17, 0,
                     socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1"))  # fmt: skip
    return ip + struct.pack("!HHHH", 5000, 30000, 8 + len(payload), 0) + payload


def _pcap(packets: list[bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
    for p in packets:
        out += struct.pack("<IIII", 0, 0, len(p), len(p)) + p
    return out


def _rtp(seq: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 8, seq, seq * 160, 1) + payload


def test_the_pcap_payloads_are_checked_against_those_sent(peer: ModuleType) -> None:
    audio = AudioLoop.build(__import__("callrec.codecs").codecs.get_codec("PCMA"))
    offset = 3
    sent = [audio.payload(offset + j) for j in range(10)]
    rtcp = struct.pack("!BBH", 0x80, 200, 6) + bytes(24)
    # Packet 0 lost, packet 5 lost, an RTCP report in between; seq wraps past 65535.
    seqs = {j: (65530 + j) % 65536 for j in range(10)}
    records = [_ip_udp(_rtp(seqs[j], sent[j])) for j in (1, 2, 3, 4)]
    records += [_ip_udp(rtcp)] + [_ip_udp(_rtp(seqs[j], sent[j])) for j in (6, 7, 8)]
    got = list(peer.pcap_rtp(_pcap(records)))
    assert [p.seq for p in got] == [seqs[j] for j in (1, 2, 3, 4, 6, 7, 8)]
    assert all(p.payload_type == 8 and p.ssrc == 1 for p in got)
    check = peer.check_pcap(Path("x.pcap"), got, audio, 10, offset, 0)
    assert check.ok and check.audio_frames == 7
    assert (check.leading_missing, check.trailing_missing) == (1, 1)
    wrong = [got[0], peer.RtpPacket(1, got[1].seq, 8, sent[0]), *got[2:]]
    bad = peer.check_pcap(Path("x.pcap"), wrong, audio, 10, offset, 0)
    assert not bad.ok and bad.mismatched == 1
    assert not peer.check_pcap(Path("x.pcap"), [], audio, 10, offset, 0).ok
    with pytest.raises(LoadError):
        list(peer.pcap_rtp(b"\x0a\x0d\x0d\x0a" + bytes(40)))


@pytest.mark.skipif(shutil.which("rtpengine") is None, reason="needs rtpengine-daemon")
@pytest.mark.parametrize("codec", ["PCMA", "G722"])
def test_a_small_load_is_recorded_by_a_real_rtpengine(
    peer: ModuleType, tmp_path: Path, codec: str
) -> None:
    options = LoadOptions(calls=3, seconds=1.0, codec=codec, verify=3, senders=1)
    report = run_async(peer.run_peer(options, workdir=tmp_path))
    assert report.ok, report.problems
    assert report.packets_received == report.packets_sent == 150
    assert report.verified == 3
    assert len(list(tmp_path.glob("spool/pcaps/bench-*.pcap"))) == 3
