"""What real phones and networks do on the control channel, end to end over sockets (issue 13:
items 1-5 and 12). The sans-I/O rules are in tests/control; here a real server answers."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from callrec.control import ControlMessage
from callrec.service import Service
from callrec.sim.phone import PhoneCall
from callrec.web.metrics import WebMetrics
from tests.support.data import encoded
from tests.support.recording import read_recording
from tests.support.rtp import rtp_packets
from tests.support.settings import server_settings
from tests.support.waiting import wait_catalogued, wait_for, wait_idle, wait_received

START = (
    "cmd=RecordStartRequest&id={id}&device=0c383e0e709a&remote_number=2011&remote_name="
    "&local_number=3001&local_name=&dir=out&codec=PCMA"
)
STOP = "cmd=RecordStopRequest&id={id}&remote_number=2011&local_number=3001&reason=hangup"
ALL_PACKETS = rtp_packets("PCMA", encoded("PCMA"))
PACKETS = ALL_PACKETS[:25]


def fields(raw: bytes) -> dict[str, str]:
    return ControlMessage.parse(raw.strip(b"\r\n\0")).as_dict()


async def started_call(server: Service, session_id: str, **kw: object) -> PhoneCall:
    """A phone that started a recording and sent :data:`PACKETS`, all counted."""
    call = PhoneCall("127.0.0.1", server.control_port, session_id=session_id, codec="PCMA", **kw)  # type: ignore[arg-type]
    answer = await call.start()
    assert answer["result"] == "success", answer
    await call.send_packets(PACKETS, realtime=False)
    await wait_received(server, session_id, len(PACKETS))
    return call


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 5)


@pytest.mark.parametrize("how", ["close", "half_close"])
async def test_stop_then_close_is_answered_and_is_a_phone_stop(server: Service, how: str) -> None:
    """Item 1: an unterminated stop followed at once by FIN (close) or a half-close."""
    call = await started_call(server, "st1")
    writer = call._writer
    reader = call._reader
    assert writer is not None and reader is not None
    writer.write(STOP.format(id="st1").encode())
    if how == "half_close":
        writer.write_eof()
        answer = await read_until_closed(reader)
        assert fields(answer) == {"cmd": "RecordStopResponse", "id": "st1", "result": "success"}
    else:
        # A full close: the answer cannot arrive, but the stop is the phone's.
        sock = writer.get_extra_info("socket")
        sock.shutdown(socket.SHUT_WR)
        writer.close()
    await call.close()
    await wait_idle(server, catalogued=True)
    (rec,) = server.catalog.find()
    assert rec.stop_reason == "phone_stop"
    assert rec.phone_stop_reason == "hangup"
    samples, _ = read_recording(server, rec.id)
    assert len(samples) == len(PACKETS) * 160


async def test_late_unterminated_stop_after_max_duration_is_answered(tmp_path: Path) -> None:
    """Item 2: the session ended at max_duration; the stop comes after more than
    connection_idle_timeout since the start, unterminated."""
    srv = Service(server_settings(tmp_path, max_duration=0.3, connection_idle_timeout=0.5))
    await srv.start()
    try:
        call = await started_call(srv, "late")
        await wait_idle(srv, catalogued=True)
        await asyncio.sleep(1.0)  # past the idle timeout: the phone still believes it records
        assert not call.control_lost
        await call.send_raw_control(STOP.format(id="late").encode())
        assert await call.read_answer(5) == {
            "cmd": "RecordStopResponse",
            "id": "late",
            "result": "success",
        }
        await call.close()
        (rec,) = srv.catalog.find()
        assert rec.stop_reason == "max_duration"
    finally:
        await srv.stop()


@pytest.mark.parametrize("by", ["address", "device"])
async def test_stop_on_a_new_connection_ends_the_recording(server: Service, by: str) -> None:
    """Item 3: the stop comes on another TCP connection of the same phone."""
    call = await started_call(server, "nc1")
    stop = STOP.format(id="nc1") + ("&device=0c383e0e709a" if by == "device" else "")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.control_port)
    writer.write(stop.encode() + b"\r\n")
    answer = await asyncio.wait_for(reader.readline(), 5)
    assert fields(answer) == {"cmd": "RecordStopResponse", "id": "nc1", "result": "success"}
    await wait_idle(server, catalogued=True)
    (rec,) = server.catalog.find()
    assert rec.stop_reason == "phone_stop" and rec.phone_stop_reason == "hangup"
    samples, _ = read_recording(server, rec.id)
    assert len(samples) == len(PACKETS) * 160
    # The first connection owed the phone nothing more: the server closed it.
    await wait_for(lambda: call.control_lost, what="the abandoned connection closed")
    writer.close()
    await call.close()


@pytest.mark.parametrize("device", ["", "0c383e0e709a", "001122334455"])
async def test_a_stop_from_another_address_or_device_ends_nothing(
    server: Service, device: str
) -> None:
    """An id can be a guessable number and a MAC is printed on the phone: a stop for them
    from another address (or naming another device) must not end the call."""
    call = await started_call(server, "guess")
    local = ("127.0.0.2", 0) if device != "001122334455" else None
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.control_port, local_addr=local
    )
    stop = STOP.format(id="guess") + (f"&device={device}" if device else "")
    writer.write(stop.encode() + b"\n")
    answer = fields(await asyncio.wait_for(reader.readline(), 5))
    assert (answer["result"], answer["reason"]) == ("failed", "unknown_id")
    writer.close()
    assert len(server.engine.recordings) == 1  # still recording
    assert (await call.stop())["result"] == "success"
    await call.close()


async def test_stop_for_an_id_no_connection_knows_is_refused(server: Service) -> None:
    call = await started_call(server, "known")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.control_port)
    writer.write(STOP.format(id="other").encode() + b"\n")
    answer = fields(await asyncio.wait_for(reader.readline(), 5))
    assert answer == {
        "cmd": "RecordStopResponse",
        "id": "other",
        "result": "failed",
        "reason": "unknown_id",
    }
    writer.close()
    assert server.engine.recordings  # the phone's own call records on
    assert (await call.stop())["result"] == "success"
    await call.close()


async def test_unencoded_ampersand_in_names_records(server: Service) -> None:
    """Item 4: a phone book's "Tom & Jerry" and "AT&T", not URL-encoded."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.control_port)
    raw = (
        START.format(id="amp")
        .replace("remote_name=", "remote_name=Tom & Jerry")
        .replace("local_name=", "local_name=AT&T")
    )
    writer.write(raw.encode())
    answer = fields(await asyncio.wait_for(reader.read(4096), 5))
    assert answer["result"] == "success", answer
    writer.write(STOP.format(id="amp").encode())
    assert fields(await asyncio.wait_for(reader.read(4096), 5))["result"] == "success"
    writer.close()
    await wait_catalogued(server)
    (rec,) = server.catalog.find()
    assert (rec.remote_name, rec.local_name) == ("Tom & Jerry", "AT&T")


async def test_unknown_commands_never_end_a_recording(server: Service) -> None:
    """Item 5: more unknown commands than max_bad_requests, mid-call."""
    call = await started_call(server, "uk")
    for _ in range(server.settings.max_bad_requests * 3):
        await call.send_raw_control(b"cmd=KeepAliveRequest&id=uk")
        assert await call.read_answer(5) == {
            "cmd": "KeepAliveResponse",
            "id": "uk",
            "result": "failed",
            "reason": "unknown_command",
        }
    # Bad input too (not commands at all): answered, and the call is kept.
    for _ in range(server.settings.max_bad_requests * 2):
        await call.send_raw_control(b"garbage without equals")
        assert (await call.read_answer(5))["reason"] == "bad_request"
    assert not call.control_lost
    await call.send_packets(ALL_PACKETS[25:50], realtime=False)
    await wait_received(server, "uk", 50)
    assert (await call.stop("hangup"))["result"] == "success"
    await call.close()
    await wait_catalogued(server)
    (rec,) = server.catalog.find()
    assert rec.stop_reason == "phone_stop"
    samples, _ = read_recording(server, rec.id)
    assert len(samples) == 50 * 160


async def test_connection_closed_soon_after_the_stop(tmp_path: Path) -> None:
    """Item 12: the server closes the control connection close_after_stop after the stop."""
    srv = Service(server_settings(tmp_path, close_after_stop=0.2))
    await srv.start()
    try:
        call = await started_call(srv, "cl")
        assert (await call.stop("hangup"))["result"] == "success"
        loop = asyncio.get_running_loop()
        began = loop.time()
        await wait_for(lambda: call.control_lost, what="the server closing the connection")
        assert loop.time() - began < 2.0
        await call.close()
    finally:
        await srv.stop()


async def test_failure_answers_keep_the_template_fields(tmp_path: Path) -> None:
    """Item 12: a refused start answers every field of the vendor's template."""
    srv = Service(server_settings(tmp_path, max_sessions=1))
    await srv.start()
    try:
        call = await started_call(srv, "a")
        other = PhoneCall("127.0.0.1", srv.control_port, session_id="b", codec="PCMA")
        answer = await other.start()
        assert list(answer) == ["cmd", "id", "result", "reason", "server", "port"]
        assert answer == {
            "cmd": "RecordStartResponse",
            "id": "b",
            "result": "failed",
            "reason": "busy",
            "server": "",
            "port": "",
        }
        await other.close()
        await call.stop()
        await call.close()
    finally:
        await srv.stop()


async def test_an_empty_id_records_on_its_connection(server: Service) -> None:
    """Item 12: `id=` empty is answered as the phone expects, echoed empty, and recorded."""
    call = await started_call(server, "")
    assert await call.stop("hangup") == {"cmd": "RecordStopResponse", "id": "", "result": "success"}
    await call.close()
    await wait_catalogued(server)
    (rec,) = server.catalog.find()
    assert rec.stop_reason == "phone_stop"
    samples, _ = read_recording(server, rec.id)
    assert len(samples) == len(PACKETS) * 160


async def test_rtp_timeout_ends_a_silent_session_and_frees_its_port(tmp_path: Path) -> None:
    """Issue 14 item 3: a phone that stops streaming but keeps its connection, and a peer
    that never streams at all, each give their port back after rtp_timeout."""
    srv = Service(server_settings(tmp_path, rtp_timeout=1.0))
    await srv.start()
    metrics = WebMetrics(srv.catalog, srv.live)  # what /metrics counts, without a web server
    try:
        talker = await started_call(srv, "talk")
        hoarder = PhoneCall("127.0.0.1", srv.control_port, session_id="mute", codec="PCMA")
        assert (await hoarder.start())["result"] == "success"
        await wait_idle(srv, catalogued=True, timeout=10)
        rows = {r.session_id: r for r in srv.catalog.find()}
        assert {r.stop_reason for r in rows.values()} == {"rtp_timeout"}
        samples, _ = read_recording(srv, rows["talk"].id)
        assert len(samples) == len(PACKETS) * 160  # what came is kept
        assert srv.ports.in_use == 0
        assert metrics.ended == {"rtp_timeout": 2}
        # The phones still believe they record: their stops are answered success.
        assert (await talker.stop())["result"] == "success"
        assert (await hoarder.stop())["result"] == "success"
        await talker.close()
        await hoarder.close()
    finally:
        metrics.close()
        await srv.stop()
