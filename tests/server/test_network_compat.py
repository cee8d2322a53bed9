"""Networks as they are, end to end over sockets (issue 13: items 6 and 10): a dual-stack
server on ``::`` records IPv4 and IPv6 phones exactly, and datagrams the kernel dropped on a
full socket queue are counted, in the catalogue and in ``/metrics``."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from callrec.net import new_socket, size_receive_buffer
from callrec.rtp.packet import RtpPacket
from callrec.service import Service
from callrec.sim.phone import PhoneCall
from tests.support.data import CODEC_DATA, SIGNAL, encoded
from tests.support.net import ipv6_loopback, needs_ipv6
from tests.support.recording import only_recording, read_recording
from tests.support.rtp import rtp_packets
from tests.support.settings import server_settings, web_settings
from tests.support.waiting import wait_catalogued, wait_received

PACKETS = rtp_packets("PCMA", encoded("PCMA"))
#: FFmpeg's decoding of the same signal, committed (A-law is stateless: a repeated signal
#: decodes to the repeated reference).
REFERENCE = np.frombuffer((CODEC_DATA / f"{SIGNAL['PCMA']}.ffmpeg.s16le").read_bytes(), "<i2")


async def _call(server: Service, host: str, session_id: str, packets: list[RtpPacket]) -> str:
    """One whole call from a phone reaching the server at ``host``; returns the answer's
    ``server=`` (where the phone sent its RTP)."""
    call = PhoneCall(host, server.control_port, session_id=session_id, codec="PCMA")
    try:
        answer = await call.start()
        assert answer["result"] == "success", answer
        await call.send_packets(packets, realtime=False)
        await wait_received(server, session_id, len(packets))
        assert (await call.stop("hangup"))["result"] == "success"
    finally:
        await call.close()
    await wait_catalogued(server)
    return answer["server"]


@pytest.fixture
async def dual_stack(tmp_path: Path) -> AsyncIterator[Service]:
    if not ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback (::1)")
    srv = Service(server_settings(tmp_path, control_host="::", media_host="::"))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def test_an_ipv4_phone_on_a_dual_stack_server_records_exactly(dual_stack: Service) -> None:
    """Item 6: the phone is ::ffff:127.0.0.1 to the control socket and 127.0.0.1 to the
    media socket; both are the same phone, and it is told an IPv4 address to send to."""
    assert await _call(dual_stack, "127.0.0.1", "v4", PACKETS) == "127.0.0.1"
    rec = only_recording(dual_stack)
    assert rec.peer_address == "127.0.0.1"
    assert (rec.packets_received, rec.packets_foreign, rec.packets_lost) == (len(PACKETS), 0, 0)
    samples, _ = read_recording(dual_stack, rec.id)
    np.testing.assert_array_equal(samples, REFERENCE)


@needs_ipv6
async def test_an_ipv6_phone_on_a_dual_stack_server_records_exactly(dual_stack: Service) -> None:
    assert await _call(dual_stack, "::1", "v6", PACKETS) == "::1"
    rec = only_recording(dual_stack)
    assert rec.peer_address == "::1"
    assert (rec.packets_received, rec.packets_foreign) == (len(PACKETS), 0)
    samples, _ = read_recording(dual_stack, rec.id)
    np.testing.assert_array_equal(samples, REFERENCE)


@needs_ipv6
async def test_a_stop_on_a_new_connection_finds_a_dual_stack_session(dual_stack: Service) -> None:
    """The phone's address is one spelling on every connection: a stop sent on a second
    connection (issue 13 item 3) finds the session the first one started."""
    call = PhoneCall("127.0.0.1", dual_stack.control_port, session_id="nc", codec="PCMA")
    try:
        assert (await call.start())["result"] == "success"
        await call.send_packets(PACKETS[:10], realtime=False)
        await wait_received(dual_stack, "nc", 10)
        reader, writer = await asyncio.open_connection("127.0.0.1", dual_stack.control_port)
        writer.write(b"cmd=RecordStopRequest&id=nc&reason=hangup\r\n")
        answer = await asyncio.wait_for(reader.readline(), 5)
        assert b"result=success" in answer, answer
        writer.close()
    finally:
        await call.close()
    await wait_catalogued(dual_stack)
    rec = only_recording(dual_stack)
    assert rec.stop_reason == "phone_stop" and rec.packets_received == 10


async def _metrics(server: Service) -> dict[str, float]:
    assert server.web is not None
    async with httpx.AsyncClient(base_url=server.web.url, timeout=30) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    values: dict[str, float] = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def _burst(server: Service, session_id: str, packets: list[RtpPacket]) -> None:
    """A call whose packets all go in one burst while the server cannot read (its loop is
    busy: here, with this test's own sending), then a stop."""
    call = PhoneCall("127.0.0.1", server.control_port, session_id=session_id, codec="PCMA")
    try:
        answer = await call.start()
        assert answer["result"] == "success", answer
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for packet in packets:  # no await: the server's loop gets no turn meanwhile
                udp.sendto(packet.serialize(), (answer["server"], int(answer["port"])))
        assert (await call.stop("hangup"))["result"] == "success"
    finally:
        await call.close()
    await wait_catalogued(server)


@pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="the kernel's drop count (SO_MEMINFO) is Linux's",
)
async def test_kernel_drops_are_counted_per_recording_and_in_metrics(tmp_path: Path) -> None:
    """Item 10: a socket queue far smaller than the burst; what it refused is counted, and
    every datagram sent is either received or counted dropped (loopback loses none)."""
    srv = Service(web_settings(tmp_path, media_rcvbuf=4096))
    await srv.start()
    try:
        await _burst(srv, "drops", PACKETS)
        rec = only_recording(srv)
        assert rec.packets_kernel_dropped > 0
        assert rec.packets_received + rec.packets_kernel_dropped == len(PACKETS)
        assert rec.status == "complete"
        assert rec.counters.kernel_dropped == rec.packets_kernel_dropped
        values = await _metrics(srv)
        assert values["callrec_packets_kernel_dropped_total"] == rec.packets_kernel_dropped
    finally:
        await srv.stop()


def _default_buffer_holds(size: int) -> bool:
    with new_socket("127.0.0.1") as probe:
        return size_receive_buffer(probe, size).granted >= 2 * size


@pytest.mark.skipif(
    not _default_buffer_holds(1024 * 1024),
    reason="net.core.rmem_max caps media_rcvbuf here (see packaging/systemd/sysctl.conf)",
)
async def test_a_burst_of_a_thousand_packets_is_recorded_whole(tmp_path: Path) -> None:
    """What ``callrec phone --fast`` sends: 1,000 packets at once. The default media_rcvbuf
    holds them all (a 256 KiB buffer kept 630)."""
    data = encoded("PCMA") * 10
    packets = rtp_packets("PCMA", data)
    assert len(packets) == 1000
    srv = Service(server_settings(tmp_path))
    await srv.start()
    try:
        await _burst(srv, "burst", packets)
        rec = only_recording(srv)
        assert (rec.packets_received, rec.packets_kernel_dropped) == (1000, 0)
        samples, _ = read_recording(srv, rec.id)
        np.testing.assert_array_equal(samples, np.tile(REFERENCE, 10))
    finally:
        await srv.stop()


@needs_ipv6
async def test_the_web_ui_on_a_dual_stack_address_answers_ipv4_and_ipv6(tmp_path: Path) -> None:
    srv = Service(web_settings(tmp_path, web_host="::"))
    await srv.start()
    try:
        assert srv.web is not None
        for host in ("127.0.0.1", "[::1]"):
            async with httpx.AsyncClient(timeout=30) as client:
                response = await client.get(f"http://{host}:{srv.web.port}/metrics")
            assert response.status_code == 200, host
            assert "callrec_packets_kernel_dropped_total" in response.text
    finally:
        await srv.stop()
