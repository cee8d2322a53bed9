"""The phone simulator: pure audio/RTP helpers, then real sockets against a fake server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from callrec.codecs import get_codec
from callrec.control.message import ControlMessage
from callrec.exceptions import CallrecError
from callrec.rtp.packet import RtpPacket
from callrec.sim.call import parse_server, record_call, run_phone
from callrec.sim.phone import (
    PhoneCall,
    PhoneError,
    build_packets,
    fit_duration,
    load_audio,
    mix,
    resample,
)
from tests.support.audio import tone, write_wav
from tests.support.waiting import wait_for

CODECS = ["PCMA", "PCMU", "G722"]


# -- build_packets -------------------------------------------------------------------------


@pytest.mark.parametrize("name", CODECS)
def test_build_packets_headers_and_sizes(name: str) -> None:
    codec = get_codec(name)
    frame = codec.sample_rate // 50
    pcm = tone(codec.sample_rate, 1.0)[: 10 * frame + frame // 4]  # ends in a partial frame
    packets = build_packets(pcm, codec, ssrc=0x1234ABCD, first_seq=100, first_ts=8000)
    assert len(packets) == 11
    assert [p.sequence_number for p in packets] == list(range(100, 111))
    assert [p.timestamp for p in packets] == [8000 + 160 * i for i in range(11)]
    assert all(len(p.payload) == 160 for p in packets)
    assert {p.payload_type for p in packets} == {codec.payload_type}
    assert {p.ssrc for p in packets} == {0x1234ABCD}
    assert [p.marker for p in packets] == [True] + [False] * 10


@pytest.mark.parametrize("name", CODECS)
def test_build_packets_wraps_sequence_and_timestamp(name: str) -> None:
    codec = get_codec(name)
    pcm = np.zeros(codec.sample_rate // 50 * 10, dtype=np.int16)
    packets = build_packets(pcm, codec, ssrc=7, first_seq=65530, first_ts=2**32 - 320)
    expected_seq = [65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3]
    assert [p.sequence_number for p in packets] == expected_seq
    assert [p.timestamp for p in packets] == [2**32 - 320, 2**32 - 160] + [
        160 * i for i in range(8)
    ]
    for packet in packets:  # every packet is valid on the wire
        assert RtpPacket.parse(packet.serialize()) == packet


def test_build_packets_empty_and_other_packet_size() -> None:
    codec = get_codec("PCMU")
    assert build_packets(np.zeros(0, dtype=np.int16), codec, ssrc=1) == []
    packets = build_packets(np.zeros(800, dtype=np.int16), codec, ssrc=1, packet_ms=30)
    assert [len(p.payload) for p in packets] == [240] * 4  # 800 samples padded to 960
    assert [p.timestamp for p in packets] == [0, 240, 480, 720]


@pytest.mark.parametrize(
    ("name", "payload_bytes", "ticks"),
    [("G726-16", 40, 160), ("G726-24", 60, 160), ("G726-32", 80, 160), ("G726-40", 100, 160),
     ("G723", 24, 240)],
)  # fmt: skip
def test_build_packets_of_ffmpeg_codecs(name: str, payload_bytes: int, ticks: int) -> None:
    """G.726's encoder holds thousands of samples and G.723.1 codes 30 ms frames: every
    packet still holds its own time, and the audio comes back in the same place."""
    codec = get_codec(name)
    pcm = tone(8000, 1.0)[:7000]
    packets = build_packets(pcm, codec, ssrc=1, first_ts=0)
    assert [len(p.payload) for p in packets] == [payload_bytes] * len(packets)
    assert [p.timestamp for p in packets] == [ticks * i for i in range(len(packets))]
    assert len(packets) == -(-7000 // ticks)
    assert {p.payload_type for p in packets} == {codec.payload_type}
    decoded = decode_all(name, packets)
    # G.723.1 has a look-ahead: its audio comes out a little late.
    best = max(np.corrcoef(decoded[lag : lag + 6000], pcm[:6000])[0, 1] for lag in range(400))
    assert best > 0.9


def test_build_packets_refuses_g729_without_an_encoder() -> None:
    with pytest.raises(CallrecError, match=r"no G\.729 encoder"):
        build_packets(tone(8000, 0.1), get_codec("G729"), ssrc=1)


def decode_all(name: str, packets: list[RtpPacket]) -> npt.NDArray[np.float64]:
    decoder = get_codec(name).decoder()
    pcm = b"".join(decoder.decode(p.payload) for p in packets)
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


@pytest.mark.parametrize("name", ["PCMA", "PCMU"])
def test_build_packets_g711_decodes_within_quantisation_error(name: str) -> None:
    codec = get_codec(name)
    pcm = tone(codec.sample_rate, 0.5)
    decoded = decode_all(name, build_packets(pcm, codec, ssrc=1))
    assert len(decoded) == len(pcm)
    # G.711 keeps about 5 significant bits: the error is within half a step of the segment.
    error = np.abs(decoded - pcm)
    assert np.all(error <= np.abs(pcm.astype(np.float64)) / 32 + 16)


def test_build_packets_g722_decodes_close_to_input() -> None:
    codec = get_codec("G722")
    pcm = tone(codec.sample_rate, 0.5).astype(np.float64)
    decoded = decode_all("G722", build_packets(pcm, codec, ssrc=1))
    assert len(decoded) == len(pcm)
    # The QMF filter bank delays the signal by a few tens of samples: find the delay first.
    best = 0.0
    for lag in range(64):
        ref = pcm[: len(pcm) - lag]
        noise = ref - decoded[lag:]
        best = max(best, 10 * np.log10(np.sum(ref**2) / np.sum(noise**2)))
    assert best > 25.0


# -- audio helpers -------------------------------------------------------------------------


def test_mix_sums_and_saturates() -> None:
    local = np.array([30000, -30000, 1, 5], dtype=np.int16)
    remote = np.array([10000, -10000], dtype=np.int16)
    out = mix(local, remote)
    assert out.dtype == np.int16
    assert out.tolist() == [32767, -32768, 1, 5]
    assert mix(remote, local).tolist() == out.tolist()


def test_load_audio_resamples_16k_to_8k(tmp_path: Path) -> None:
    ramp = np.arange(16000, dtype=np.int16)
    path = write_wav(tmp_path / "ramp.wav", ramp, 16000)
    out = load_audio(path, 8000)
    assert out.dtype == np.int16
    assert len(out) == 8000
    assert out[:5].tolist() == [0, 2, 4, 6, 8]
    assert load_audio(path, 16000).tolist() == ramp.tolist()
    assert len(load_audio(path, 44100)) == 44100


def test_load_audio_mixes_stereo_to_mono(tmp_path: Path) -> None:
    frames = np.tile(np.array([1000, 3000], dtype=np.int16), 800)  # L=1000, R=3000
    path = write_wav(tmp_path / "stereo.wav", frames, 8000, channels=2)
    out = load_audio(path, 8000)
    assert len(out) == 800
    assert set(out.tolist()) == {2000}


def test_load_audio_rejects_what_is_not_wav(tmp_path: Path) -> None:
    path = tmp_path / "song.mp3"
    path.write_bytes(b"ID3\x03\x00 not a wav at all")
    with pytest.raises(PhoneError, match="is not a PCM WAV file") as info:
        load_audio(path, 8000)
    assert info.value.reason == "bad_audio"
    assert isinstance(info.value, CallrecError)
    with pytest.raises(PhoneError, match="does not exist"):
        load_audio(tmp_path / "missing.wav", 8000)


def test_resample_and_fit_duration() -> None:
    assert resample([0, 10, 20, 30], 8000, 16000).tolist() == [0, 5, 10, 15, 20, 25, 30, 30]
    assert resample([40000.0, -40000.0], 8000, 8000).tolist() == [32767, -32768]
    assert fit_duration(np.ones(100, dtype=np.int16), 1000, 0.05).tolist() == [1] * 50
    padded = fit_duration(np.ones(10, dtype=np.int16), 1000, 0.02)
    assert padded.tolist() == [1] * 10 + [0] * 10


def test_parse_server() -> None:
    assert parse_server("10.0.0.5:10001") == ("10.0.0.5", 10001)
    assert parse_server("recorder.local") == ("recorder.local", 10000)
    assert parse_server("[::1]:12000") == ("::1", 12000)
    with pytest.raises(PhoneError, match="out of range"):
        parse_server("host:70000")


# -- real sockets against a fake server ----------------------------------------------------


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, sink: list[tuple[bytes, tuple[str, int]]]) -> None:
        self.sink = sink

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sink.append((data, addr))


class FakeServer:
    """A minimal recording server: one read is one message when the phone sends no
    terminator (like the public server), else messages end with ``terminator``."""

    def __init__(
        self,
        terminator: bytes = b"",
        *,
        refuse: str | None = None,
        silent: bool = False,
        split_answer: bool = False,
        hang_up_after_start: bool = False,
    ) -> None:
        self.terminator = terminator
        self.refuse = refuse
        self.silent = silent
        self.split_answer = split_answer
        self.hang_up_after_start = hang_up_after_start
        self.requests: list[ControlMessage] = []
        self.peers: list[str] = []
        self.datagrams: list[tuple[bytes, tuple[str, int]]] = []
        self.port = 0
        self.udp_port = 0
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> FakeServer:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self.datagrams), local_addr=("127.0.0.1", 0)
        )
        self.udp_port = self._udp.get_extra_info("sockname")[1]
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None and self._udp is not None
        self._server.close()
        await self._server.wait_closed()
        self._udp.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peers.append(writer.get_extra_info("peername")[0])
        buffer = b""
        try:
            while data := await reader.read(4096):
                buffer += data
                if self.terminator:
                    *messages, buffer = buffer.split(self.terminator)
                else:
                    messages, buffer = [buffer], b""
                for body in messages:
                    await self._answer(ControlMessage.parse(body), writer)
                if self.hang_up_after_start:
                    await asyncio.sleep(0.1)  # hang up a moment into the call's media
                    break
        finally:
            writer.close()

    async def _answer(self, message: ControlMessage, writer: asyncio.StreamWriter) -> None:
        self.requests.append(message)
        if self.silent:
            return
        sid = message.get("id")
        if message.cmd == "RecordStartRequest" and self.refuse:
            fields = [("cmd", "RecordStartResponse"), ("id", sid)]
            fields += [("result", "failed"), ("reason", self.refuse)]
        elif message.cmd == "RecordStartRequest":
            fields = [("cmd", "RecordStartResponse"), ("id", sid), ("result", "success")]
            fields += [("reason", ""), ("server", "127.0.0.1"), ("port", str(self.udp_port))]
        else:
            fields = [("cmd", "RecordStopResponse"), ("id", sid), ("result", "success")]
        answer = ControlMessage(tuple(fields)).serialize() + self.terminator
        if self.split_answer:  # in two segments: the phone must not take half an answer
            writer.write(answer[:10])
            await writer.drain()
            await asyncio.sleep(0.01)  # a gap shorter than the phone's idle wait for the rest
            answer = answer[10:]
        writer.write(answer)
        await writer.drain()

    async def wait_datagrams(self, count: int, timeout: float = 2.0) -> None:
        await wait_for(
            lambda: len(self.datagrams) >= count,
            what=lambda: f"{count} datagrams at the fake server (it has {len(self.datagrams)})",
            timeout=timeout,
        )

    def packets(self) -> list[RtpPacket]:
        return [RtpPacket.parse(data) for data, _ in self.datagrams]


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer() as fake:
        yield fake


TERMINATORS = {"none": b"", "crlf": b"\r\n", "lf": b"\n", "nul": b"\0"}


@pytest.mark.parametrize("terminator", TERMINATORS.values(), ids=TERMINATORS.keys())
async def test_realtime_call_for_each_terminator(terminator: bytes) -> None:
    pcm = np.zeros(25 * 160, dtype=np.int16)
    loop = asyncio.get_running_loop()
    async with FakeServer(terminator) as fake:
        begin = loop.time()
        result = await record_call(
            "127.0.0.1",
            fake.port,
            codec="PCMA",
            pcm=pcm,
            session_id="15082",
            terminator=terminator,
            first_seq=65520,
        )
        elapsed = loop.time() - begin
        await fake.wait_datagrams(25)
    assert result.ok, result.error
    assert result.error is None
    assert elapsed >= 0.45  # 24 intervals of 20 ms after the first packet
    assert result.start_answer == {
        "cmd": "RecordStartResponse",
        "id": "15082",
        "result": "success",
        "reason": "",
        "server": "127.0.0.1",
        "port": str(fake.udp_port),
    }
    assert result.stop_answer == {"cmd": "RecordStopResponse", "id": "15082", "result": "success"}
    assert (result.server, result.port, result.packets_sent) == ("127.0.0.1", fake.udp_port, 25)
    start, stop = fake.requests
    assert [k for k, _ in start] == [
        "cmd",
        "id",
        "device",
        "remote_number",
        "remote_name",
        "local_number",
        "local_name",
        "dir",
        "codec",
    ]
    assert start.as_dict()["codec"] == "PCMA"
    assert start.as_dict()["device"] == "0c383e0e709a"
    assert [k for k, _ in stop] == [
        "cmd",
        "id",
        "remote_number",
        "remote_name",
        "local_number",
        "local_name",
        "reason",
    ]
    packets = fake.packets()
    assert [p.sequence_number for p in packets] == [(65520 + i) % 65536 for i in range(25)]
    assert {p.payload_type for p in packets} == {8}


@pytest.mark.parametrize("name", CODECS)
async def test_fast_call_sends_everything(server: FakeServer, name: str) -> None:
    rate = get_codec(name).sample_rate
    pcm = tone(rate, 6.0)  # 300 packets
    loop = asyncio.get_running_loop()
    begin = loop.time()
    result = await record_call(
        "127.0.0.1", server.port, codec=name, pcm=pcm, realtime=False, ssrc=0xCAFE
    )
    assert loop.time() - begin < 3.0
    await server.wait_datagrams(300)
    assert result.ok and result.packets_sent == 300
    packets = server.packets()
    first = packets[0]
    assert [p.sequence_number for p in packets] == [
        (first.sequence_number + i) % 65536 for i in range(300)
    ]
    assert [p.timestamp for p in packets] == [
        (first.timestamp + 160 * i) % 2**32 for i in range(300)
    ]
    assert {p.ssrc for p in packets} == {0xCAFE}
    assert server.requests[0].get("codec") == name


async def test_refusal_is_reported_not_raised() -> None:
    async with FakeServer(refuse="busy") as fake:
        result = await record_call(
            "127.0.0.1", fake.port, codec="PCMU", pcm=np.zeros(1600, dtype=np.int16)
        )
        assert [m.cmd for m in fake.requests] == ["RecordStartRequest"]
    assert not result.ok
    assert result.error == "busy"
    assert result.start_answer["result"] == "failed"
    assert result.stop_answer is None
    assert (result.packets_sent, result.port, result.server) == (0, 0, "")
    assert fake.datagrams == []


async def test_silent_server_times_out_without_hanging() -> None:
    loop = asyncio.get_running_loop()
    async with FakeServer(silent=True) as fake:
        begin = loop.time()
        result = await record_call(
            "127.0.0.1",
            fake.port,
            codec="PCMA",
            pcm=np.zeros(160, dtype=np.int16),
            answer_timeout=0.3,
        )
        elapsed = loop.time() - begin
    assert not result.ok
    assert result.error is not None and "timeout" in result.error
    assert result.start_answer == {}
    assert 0.3 <= elapsed < 2.0


async def test_nobody_listening_is_reported() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await record_call("127.0.0.1", port, codec="PCMA", pcm=np.zeros(160, dtype=np.int16))
    assert not result.ok
    assert result.error is not None and "cannot connect" in result.error


async def test_server_hanging_up_ends_the_media_like_a_phone() -> None:
    async with FakeServer(hang_up_after_start=True) as fake:
        result = await record_call(
            "127.0.0.1", fake.port, codec="PCMA", pcm=np.zeros(50 * 160, dtype=np.int16)
        )
    assert not result.ok
    assert result.error is not None and result.error.startswith("connection_lost")
    assert result.start_answer["result"] == "success"
    assert result.stop_answer is None
    assert 0 < result.packets_sent < 50


async def test_answer_in_two_segments_without_terminator() -> None:
    async with FakeServer(split_answer=True) as fake:
        async with PhoneCall("127.0.0.1", fake.port, session_id="42", codec="PCMU") as call:
            answer = await call.start()
            assert answer["port"] == str(fake.udp_port)
            assert call.accepted
            assert (await call.stop("hangup"))["result"] == "success"
        assert fake.requests[1].get("reason") == "hangup"


async def test_phone_call_raw_bytes_extra_fields_and_abort(server: FakeServer) -> None:
    call = PhoneCall(
        "127.0.0.1",
        server.port,
        session_id="7",
        codec="G722",
        local_name="Émile Zoé",
        extra_fields={"trunk": "a&b"},
    )
    try:
        await call.start()
        header_only = RtpPacket(payload_type=9, sequence_number=1, timestamp=0, ssrc=1)
        sent = await call.send_packets([b"\x00junk", header_only], realtime=False)
        assert sent == 2
        await server.wait_datagrams(2)
        assert server.datagrams[0][0] == b"\x00junk"
        await call.abort()
        assert call.packets_sent == 2
        with pytest.raises(PhoneError, match="not open"):
            await call.send_raw_control(b"x")
    finally:
        await call.close()
    start = server.requests[0]
    assert start.get("local_name") == "Émile Zoé"
    assert start.get("trunk") == "a&b"
    assert [k for k, _ in start][-1] == "trunk"


async def test_send_packets_before_start_is_an_error() -> None:
    call = PhoneCall("127.0.0.1", 9, session_id="1", codec="PCMA")
    with pytest.raises(PhoneError, match="start was not accepted"):
        await call.send_packets([b"x"], realtime=False)
    await call.close()


async def test_bind_ip_is_the_source_of_control_and_media(server: FakeServer) -> None:
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.2", 0))
    except OSError:
        pytest.skip("127.0.0.2 is not a local address here")
    result = await record_call(
        "127.0.0.1",
        server.port,
        codec="PCMA",
        pcm=np.zeros(320, dtype=np.int16),
        realtime=False,
        bind_ip="127.0.0.2",
    )
    await server.wait_datagrams(2)
    assert result.ok
    assert server.peers == ["127.0.0.2"]
    assert {addr[0] for _, addr in server.datagrams} == {"127.0.0.2"}


async def test_run_phone_plays_files(server: FakeServer, tmp_path: Path) -> None:
    local = write_wav(tmp_path / "local.wav", tone(16000, 0.2), 16000)
    remote = write_wav(tmp_path / "remote.wav", tone(8000, 0.3), 8000)
    result = await asyncio.to_thread(
        run_phone,
        f"127.0.0.1:{server.port}",
        codec="g722",
        play=local,
        play_remote=remote,
        fast=True,
        duration=0.5,
        session_id="99",
        direction="in",
        terminator="crlf",
    )
    assert result.ok, result.error
    assert result.packets_sent == 25 and result.codec == "G722" and result.session_id == "99"
    assert "ok" in result.describe()
    await server.wait_datagrams(25)
    assert server.requests[0].get("dir") == "in"
    with pytest.raises(PhoneError, match="terminator"):
        run_phone("127.0.0.1:1", codec="PCMA", play=local, terminator="semicolon")
