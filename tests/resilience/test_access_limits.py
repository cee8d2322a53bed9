"""Who may use the server, end to end over loopback with several source addresses (127.0.0.x
are all this machine): allow-lists for the control port, SIP and the web, the per-source and
per-connection caps, and duplicate ids across connections. In each, a real phone records a
whole call, sample for sample, while the refused peer records nothing.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from callrec.catalog import RecordingInfo
from callrec.service import Service
from callrec.sim.phone import PhoneCall
from tests.support.data import CODEC_DATA, encoded
from tests.support.net import free_udp_block
from tests.support.recording import read_recording, record
from tests.support.rtp import rtp_packets
from tests.support.settings import server_settings, web_settings
from tests.support.waiting import wait_catalogued, wait_for

PHONE = "127.0.0.3"  # the real phone
OTHER = "127.0.0.2"  # the attacker, or a host that is not on the list
DEVICE = "0c383e0e709a"


def reference() -> np.ndarray:
    """FFmpeg's decode of the committed 2 s A-law signal: what a whole call must hold."""
    return np.frombuffer((CODEC_DATA / "signal.alaw.ffmpeg.s16le").read_bytes(), "<i2")


async def real_call(
    server: Service, *, session_id: str = "15082", device: str = DEVICE
) -> RecordingInfo:
    """The real phone records the whole signal; returns its catalogue row, checked."""
    answer = await record(
        server,
        "PCMA",
        rtp_packets("PCMA", encoded("PCMA")),
        session_id=session_id,
        bind_ip=PHONE,
        device=device,
    )
    assert answer["result"] == "success"
    rows = [r for r in server.catalog.find(limit=100) if r.session_id == session_id]
    assert len(rows) == 1
    row = rows[0]
    assert (row.status, row.duration, row.peer_address) == ("complete", 2.0, PHONE)
    samples, _ = read_recording(server, row.id)
    np.testing.assert_array_equal(samples, reference())
    return row


MakeServer = Callable[..., Awaitable[Service]]


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[MakeServer]:
    """Start a server with :func:`server_settings` and these overrides; stopped at the end."""
    started: list[Service] = []

    async def make(**overrides: object) -> Service:
        srv = Service(server_settings(tmp_path, **overrides))
        await srv.start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        await srv.stop()


class Control:
    """A raw control connection from ``bind``: newline-terminated requests, one answer each."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, bind: str) -> Control:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(bind, 0))
        return cls(reader, writer)

    async def ask(self, request: str) -> dict[str, str]:
        self.writer.write(request.encode() + b"\n")
        await self.writer.drain()
        line = await asyncio.wait_for(self.reader.readline(), 5)
        assert line.endswith(b"\n"), f"no answer: {line!r}"
        return dict(p.split("=", 1) for p in line.decode().strip().split("&"))

    async def start(self, session_id: str, device: str = "a0b1c2d3e4f5") -> dict[str, str]:
        return await self.ask(
            f"cmd=RecordStartRequest&id={session_id}&device={device}&codec=PCMA&dir=out"
        )

    async def closed_by_server(self, limit: float = 5.0) -> bool:
        try:
            async with asyncio.timeout(limit):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    def close(self) -> None:
        self.writer.close()


def start_line(session_id: str, device: str = DEVICE) -> str:
    return f"cmd=RecordStartRequest&id={session_id}&device={device}&codec=PCMA&dir=out"


async def test_one_connection_cannot_hoard_the_media_ports(make_server: MakeServer) -> None:
    # Eight media ports: enough for every call of a small site, if no one hoards them.
    low = free_udp_block(8)
    server = await make_server(
        max_sessions_per_connection=4, media_port_min=low, media_port_max=low + 7
    )
    hoarder = await Control.open(server.control_port, OTHER)
    answers = [await hoarder.start(str(i)) for i in range(200)]
    assert [a["result"] for a in answers[:4]] == ["success"] * 4
    assert {(a["result"], a["reason"]) for a in answers[4:]} == {("failed", "too_many_sessions")}
    assert server.engine.admission.refused["too_many_sessions"] == 196
    assert server.ports.in_use == 4
    # The ports it does hold are not every port: the real phone records.
    await real_call(server)
    hoarder.close()
    await wait_for(lambda: not server.engine.recordings, what="the hoarder's sessions to end")
    await wait_catalogued(server)
    rows = server.catalog.find(limit=300)
    # Only the four sessions it was given exist for the hoarder (empty: it sent no RTP).
    theirs = [r for r in rows if r.peer_address == OTHER]
    assert sorted(r.session_id for r in theirs) == ["0", "1", "2", "3"]
    assert {r.stop_reason for r in theirs} == {"connection_lost"}
    assert all(r.packets_received == 0 for r in theirs)


async def test_idle_connections_from_one_host_do_not_lock_phones_out(
    make_server: MakeServer,
) -> None:
    server = await make_server(max_connections=20, max_connections_per_source=5)
    port = server.control_port
    idle = [await Control.open(port, OTHER) for _ in range(50)]
    # The first five stay; the rest are closed at once, before they count against the 20.
    closed = await asyncio.gather(*(c.closed_by_server(limit=2.0) for c in idle[5:]))
    assert all(closed)
    assert server.phone.connections == 5
    assert server.engine.admission.refused_connections[("control", "too_many_connections")] == 45
    await real_call(server)
    # Nothing was recorded for the idle host.
    assert [r.peer_address for r in server.catalog.find(limit=10)] == [PHONE]
    for c in idle:
        c.close()


async def test_the_same_id_from_many_connections_records_once(make_server: MakeServer) -> None:
    server = await make_server()
    port = server.control_port
    call = PhoneCall(
        "127.0.0.1", port, session_id="777", codec="PCMA", device=DEVICE, bind_ip=PHONE
    )
    try:
        assert (await call.start())["result"] == "success"
        # 39 more starts of the same phone's id 777 on connections of their own.
        copies = [await Control.open(port, PHONE) for _ in range(39)]
        answers = [await c.ask(start_line("777")) for c in copies]
        assert {(a["result"], a["reason"]) for a in answers} == {("failed", "duplicate_id")}
        # Another phone behind the same address (another MAC) may use the same id.
        neighbour = await Control.open(port, PHONE)
        assert (await neighbour.ask(start_line("777", "0c383e0e7000")))["result"] == "success"
        assert (await neighbour.ask("cmd=RecordStopRequest&id=777"))["result"] == "success"
        packets = rtp_packets("PCMA", encoded("PCMA"))
        await call.send_packets(packets, realtime=False)
        await wait_for(
            lambda: any(s.counters["received"] >= 100 for s in server.live.live_sessions()),
            what="the call's packets",
        )
        assert (await call.stop())["result"] == "success"
    finally:
        await call.close()
    for c in [*copies, neighbour]:
        c.close()
    await wait_for(lambda: not server.engine.recordings, what="every session to end")
    await wait_catalogued(server)
    rows = server.catalog.find(limit=100)
    assert sorted(r.device for r in rows) == ["0c383e0e7000", DEVICE]
    (row,) = [r for r in rows if r.device == DEVICE]
    assert (row.status, row.duration, row.stop_reason) == ("complete", 2.0, "phone_stop")
    samples, _ = read_recording(server, row.id)
    np.testing.assert_array_equal(samples, reference())
    assert server.engine.admission.refused["duplicate_id"] == 39


async def test_control_allow_list_refuses_other_hosts_and_devices(make_server: MakeServer) -> None:
    server = await make_server(
        control_allow=[PHONE, "10.20.0.0/16"], control_allow_devices=["0C:38:3E:0E:70:9A"]
    )
    port = server.control_port
    # A host not on the list: its start is answered forbidden, then it is closed.
    outsider = await Control.open(port, OTHER)
    answer = await outsider.start("1", DEVICE)
    assert answer == {
        "cmd": "RecordStartResponse",
        "id": "1",
        "result": "failed",
        "reason": "forbidden",
        "server": "",
        "port": "",
    }
    assert await outsider.closed_by_server()
    outsider.close()
    # The right host with a device not on the list.
    stranger = await Control.open(port, PHONE)
    assert (await stranger.start("2", "0c383e0e709b"))["reason"] == "forbidden"
    stranger.close()
    await real_call(server, device=DEVICE)
    assert [r.peer_address for r in server.catalog.find(limit=10)] == [PHONE]
    admission = server.engine.admission
    assert admission.refused_connections[("control", "forbidden")] == 1
    assert admission.refused["forbidden"] == 2


async def test_control_allow_list_on_a_dual_stack_listener(make_server: MakeServer) -> None:
    # "::" takes IPv4 phones as ::ffff:a.b.c.d: the list is written, and matched, in IPv4.
    # (The recording of such a phone is tests/server/test_network_compat.py's.)
    server = await make_server(
        control_host="::", control_allow=[PHONE], advertised_address="127.0.0.1"
    )
    outsider = await Control.open(server.control_port, OTHER)
    assert (await outsider.start("1", DEVICE))["reason"] == "forbidden"
    outsider.close()
    phone = await Control.open(server.control_port, PHONE)
    assert (await phone.start("2", DEVICE))["result"] == "success"
    assert (await phone.ask("cmd=RecordStopRequest&id=2"))["result"] == "success"
    phone.close()
    assert server.engine.admission.refused_connections[("control", "forbidden")] == 1


async def test_web_allow_list_answers_403_and_metrics_count_refusals(tmp_path: Path) -> None:
    server = Service(web_settings(tmp_path, web_allow=["127.0.0.1", PHONE], control_allow=[PHONE]))
    await server.start()
    try:
        assert server.web is not None
        url = f"http://127.0.0.1:{server.web.port}"
        outside = httpx.AsyncHTTPTransport(local_address=OTHER)
        async with httpx.AsyncClient(base_url=url, transport=outside) as client:
            for path in ("/health", "/api/v1/recordings", "/login", "/metrics"):
                response = await client.get(path, headers={"X-Forwarded-For": "127.0.0.1"})
                assert response.status_code == 403, path
                assert "web_allow" in response.text
        # A refused control connection, for the counters below.
        outsider = await Control.open(server.control_port, OTHER)
        assert (await outsider.start("9", DEVICE))["reason"] == "forbidden"
        outsider.close()
        await real_call(server)
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/health")).status_code == 200
            text = (await client.get("/metrics")).text
        values = _samples(text)
        assert values['callrec_refused_connections_total{listener="web",reason="forbidden"}'] == 4
        assert (
            values['callrec_refused_connections_total{listener="control",reason="forbidden"}'] == 1
        )
        assert (
            values[
                'callrec_refused_connections_total{listener="control",'
                'reason="too_many_connections"}'
            ]
            == 0
        )
        assert values['callrec_refused_starts_total{reason="forbidden"}'] == 1
        assert values['callrec_refused_starts_total{reason="too_many_sessions"}'] == 0
        assert [r.peer_address for r in server.catalog.find(limit=10)] == [PHONE]
    finally:
        await server.stop()


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _request(method: str, transport: str, port: int, call_id: str) -> bytes:
    return (
        f"{method} sip:bob@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {OTHER}:{port};branch=z9hG4bK{call_id}\r\n"
        f"From: <sip:mallory@127.0.0.1>;tag=m1\r\nTo: <sip:bob@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContact: <sip:mallory@{OTHER}:{port}>\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def test_sip_allow_list_answers_403_over_udp_and_tcp(tmp_path: Path) -> None:
    from tests.sip.test_e2e import alaw_signal, check_channel, read_stereo
    from tests.sip.ua import TestPhone, play
    from tests.support.rtp import alaw_packets
    from tests.support.sip import start_env, stop_env
    from tests.support.waiting import wait_idle

    env = await start_env(tmp_path, sip_allow=["127.0.0.1"])
    alice = TestPhone("alice", "alice-pw", env.address)
    bob = TestPhone("bob", "bob-pw", env.address)
    try:
        await env.add_account("alice", "alice-pw")
        await env.add_account("bob", "bob-pw")
        await env.add_account("mallory", "mallory-pw")
        # From a host not on the list: 403 to every request, over UDP and over TCP.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((OTHER, 0))
            udp.settimeout(5)
            for n, method in enumerate(("REGISTER", "INVITE", "OPTIONS")):
                udp.sendto(_request(method, "UDP", udp.getsockname()[1], f"u{n}"), env.address)
                # A thread waits: the server runs on this event loop.
                answer = await asyncio.to_thread(udp.recv, 65536)
                assert answer.startswith(b"SIP/2.0 403 "), answer
                assert f"CSeq: 1 {method}".encode() in answer
        assert env.sip.tcp_port is not None
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", env.sip.tcp_port, local_addr=(OTHER, 0)
        )
        writer.write(_request("INVITE", "TCP", writer.get_extra_info("sockname")[1], "t1"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"SIP/2.0 403 ")
        writer.close()
        assert env.server.engine.admission.refused_connections[("sip", "forbidden")] == 4
        assert env.sip.core is not None and not env.sip.core.calls

        # The phones on the list call and record as ever.
        for phone in (alice, bob):
            await phone.start()
            assert (await phone.register()).status == 200
        answering = asyncio.create_task(bob.answer_call())
        assert (await alice.invite("bob")).status == 200
        await answering
        data, ref = alaw_signal()
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.1
        talk = [
            asyncio.create_task(play(alice, alaw_packets(data, ssrc=0xA11CE), start=t0)),
            asyncio.create_task(play(bob, alaw_packets(data[::-1], ssrc=0xB0B), start=t0)),
        ]
        await asyncio.sleep(max(0.0, t0 + 0.4 - loop.time()))
        assert (await alice.info_record("on")).status == 200
        await asyncio.sleep(max(0.0, t0 + 1.4 - loop.time()))
        assert (await alice.bye()).status == 200
        await bob.wait_bye()
        for task in talk:
            task.cancel()
        await asyncio.gather(*talk, return_exceptions=True)
        await wait_idle(env.server)
        (row,) = env.server.catalog.find(limit=10)
        assert (row.status, row.local_number, row.remote_number) == ("complete", "alice", "bob")
        stereo = read_stereo(env.server.root, row)
        check_channel(stereo[:, 0], ref, near=20)
        check_channel(stereo[:, 1], ref[::-1].copy(), near=20)
    finally:
        await alice.close()
        await bob.close()
        await stop_env(env)
