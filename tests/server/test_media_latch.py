"""Media latching in the kernel (issue 14 item 1), end to end over loopback: a call's socket
takes only the phone's address, then only its address and port; a flood from elsewhere costs
the call nothing; a phone whose source port changes is followed after a silence."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from callrec.rtp.packet import RtpPacket
from callrec.service import Service
from callrec.sim.phone import PhoneCall
from tests.support.data import encoded
from tests.support.ffmpeg import ffmpeg_samples, needs_ffmpeg
from tests.support.recording import only_recording, read_recording
from tests.support.rtp import rtp_packets
from tests.support.settings import server_settings
from tests.support.waiting import wait_catalogued, wait_for, wait_received

pytestmark = needs_ffmpeg

CODEC = "PCMA"


@pytest.fixture
async def latching(tmp_path: Path) -> AsyncIterator[Service]:
    srv = Service(server_settings(tmp_path, media_relatch_after=0.3))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def _udp(ip: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ip, 0))
    return sock


def _send(sock: socket.socket, packets: list[RtpPacket], port: int) -> None:
    for p in packets:
        sock.sendto(p.serialize(), ("127.0.0.1", port))


async def _start(srv: Service, session_id: str) -> tuple[PhoneCall, int]:
    call = PhoneCall("127.0.0.1", srv.control_port, session_id=session_id, codec=CODEC)
    answer = await call.start()
    assert answer["result"] == "success"
    return call, int(answer["port"])


async def _finish(srv: Service, call: PhoneCall) -> None:
    await call.stop()
    await call.close()
    await wait_catalogued(srv)


def _reference(packets: list[RtpPacket]) -> np.ndarray:
    return ffmpeg_samples(CODEC, b"".join(p.payload for p in packets))


async def test_a_flood_from_another_address_costs_the_call_no_packet(latching: Service) -> None:
    packets = rtp_packets(CODEC, encoded(CODEC))[:250]
    call, port = await _start(latching, "flood")
    stop = threading.Event()
    flooded = [0]

    def flood() -> None:
        # As fast as one core sends, from another host, far beyond what the call's socket
        # buffer holds; bounded in count so the test ends by itself.
        junk = rtp_packets(CODEC, bytes(160 * 4), ssrc=666)[0].serialize()
        with _udp("127.0.0.2") as sock:
            for _ in range(300_000):
                if stop.is_set():
                    break
                # ICMP refusals come back as errors: keep flooding.
                with contextlib.suppress(OSError):
                    sock.sendto(junk, ("127.0.0.1", port))
                flooded[0] += 1

    thread = threading.Thread(target=flood)
    thread.start()
    phone = _udp("127.0.0.1")
    try:
        await wait_for(lambda: flooded[0] >= 20_000, what="the flood to be under way")
        for i in range(0, len(packets), 25):
            _send(phone, packets[i : i + 25], port)
            await asyncio.sleep(0.02)  # the server's loop reads between bursts
        await wait_received(latching, "flood", len(packets))
    finally:
        stop.set()
        thread.join()
        phone.close()
    await _finish(latching, call)
    rec = only_recording(latching)
    assert flooded[0] > 20_000
    assert rec.packets_received == len(packets)  # not one of the flood reached the call
    assert rec.packets_lost == 0 and rec.packets_foreign == 0
    samples, _ = read_recording(latching, rec.id)
    np.testing.assert_array_equal(samples, _reference(packets))


async def test_once_latched_another_port_of_the_phone_address_is_kept_out(
    latching: Service,
) -> None:
    packets = rtp_packets(CODEC, encoded(CODEC))[:40]
    call, port = await _start(latching, "nat")
    phone, neighbour = _udp("127.0.0.1"), _udp("127.0.0.1")
    try:
        _send(phone, packets[:20], port)
        await wait_received(latching, "nat", 20)
        # A second phone behind the same NAT address, sending its own call to this port.
        _send(neighbour, rtp_packets(CODEC, bytes(160 * 10), ssrc=666, seq0=1020, ts0=8200), port)
        _send(phone, packets[20:], port)
        await wait_received(latching, "nat", 40)
    finally:
        phone.close()
        neighbour.close()
    await _finish(latching, call)
    rec = only_recording(latching)
    assert rec.packets_received == 40 and rec.packets_foreign == 0
    samples, _ = read_recording(latching, rec.id)
    np.testing.assert_array_equal(samples, _reference(packets))


async def test_before_the_first_packet_strays_of_the_phone_address_are_counted(
    latching: Service,
) -> None:
    packets = rtp_packets(CODEC, encoded(CODEC))[:20]
    call, port = await _start(latching, "early")
    phone, stray = _udp("127.0.0.1"), _udp("127.0.0.1")
    try:
        # Not RTP: nothing the stream takes, so nothing latches on it.
        for _ in range(3):
            stray.sendto(b"\x00junk", ("127.0.0.1", port))
        _send(phone, packets, port)
        await wait_received(latching, "early", 23)
    finally:
        phone.close()
        stray.close()
    await _finish(latching, call)
    rec = only_recording(latching)
    assert rec.packets_malformed == 3 and rec.packets_received == 23
    samples, _ = read_recording(latching, rec.id)
    np.testing.assert_array_equal(samples, _reference(packets))


async def test_a_phone_whose_source_port_changes_is_followed_after_a_silence(
    latching: Service,
) -> None:
    packets = rtp_packets(CODEC, encoded(CODEC))[:40]
    call, port = await _start(latching, "rebind")
    first, second = _udp("127.0.0.1"), _udp("127.0.0.1")
    try:
        _send(first, packets[:20], port)
        await wait_received(latching, "rebind", 20)
        # The NAT rebinds: the same stream goes on from another port after a pause longer
        # than media_relatch_after; the server takes the new port for the rest of the call.
        live = latching.live.live_sessions()[0]
        assert live.counters["latch_changes"] == 0

        def latch_open() -> bool:
            rec = next(iter(latching.phone.sessions.values()))
            latch = rec.source.latch
            return latch is not None and latch.port is None

        await wait_for(latch_open, what="the latch to open after the silence")
        _send(second, packets[20:], port)
        await wait_received(latching, "rebind", 40)
        assert latching.live.live_sessions()[0].counters["latch_changes"] == 1
    finally:
        first.close()
        second.close()
    await _finish(latching, call)
    rec = only_recording(latching)
    assert rec.packets_received == 40 and rec.packets_lost == 0
    assert rec.latch_changes == 1
    samples, _ = read_recording(latching, rec.id)
    np.testing.assert_array_equal(samples, _reference(packets))


async def test_without_latching_other_addresses_are_counted_foreign(tmp_path: Path) -> None:
    srv = Service(server_settings(tmp_path, media_latch=False))
    await srv.start()
    try:
        packets = rtp_packets(CODEC, encoded(CODEC))[:20]
        call, port = await _start(srv, "open")
        intruder, phone = _udp("127.0.0.2"), _udp("127.0.0.1")
        try:
            _send(intruder, rtp_packets(CODEC, bytes(160 * 5), ssrc=666), port)
            _send(phone, packets, port)
            await wait_received(srv, "open", 25)
        finally:
            intruder.close()
            phone.close()
        await _finish(srv, call)
        rec = only_recording(srv)
        assert rec.packets_foreign == 5 and rec.packets_received == 25
        samples, _ = read_recording(srv, rec.id)
        np.testing.assert_array_equal(samples, _reference(packets))
    finally:
        await srv.stop()
