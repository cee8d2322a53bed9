"""Bad input gets a failed answer or is dropped and counted, and the server keeps serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from callrec.control import ControlMessage
from callrec.service import Service
from callrec.sim.phone import PhoneCall
from tests.support.data import encoded
from tests.support.recording import only_recording, read_recording, record
from tests.support.rtp import rtp_packets
from tests.support.settings import server_settings
from tests.support.waiting import wait_catalogued, wait_idle, wait_received

START = (
    "cmd=RecordStartRequest&id={id}&device=0c383e0e709a&remote_number=2011&remote_name="
    "&local_number=3001&local_name=&dir=out&codec={codec}"
)


async def exchange(server: Service, data: bytes, *, wait_close: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.control_port)
    writer.write(data)
    await writer.drain()
    if wait_close:
        answer = await asyncio.wait_for(reader.read(), 5)
    else:
        answer = await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    return answer


def answer_of(raw: bytes) -> dict[str, str]:
    return ControlMessage.parse(raw.strip(b"\r\n\0")).as_dict()


async def assert_still_serving(server: Service, session_id: str = "after") -> None:
    await record(server, "PCMA", rtp_packets("PCMA", encoded("PCMA"))[:5], session_id=session_id)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\xff\xfe garbage \x01\x02", "bad_request"),
        (b"hello world\r\n", "bad_request"),
        (b"cmd=RecordStartRequest&device=x&codec=PCMA\n", "bad_request"),
        (START.format(id="1", codec="OPUS").encode(), "unsupported_codec"),
        (START.format(id="1", codec="").encode() + b"\r\n", "unsupported_codec"),
        (b"cmd=RecordStopRequest&id=404\n", "unknown_id"),
        (b"cmd=Reboot&id=1\n", "unknown_command"),
        (b"&".join(b"k%d=v" % i for i in range(10_000)) + b"\n", "too_large"),
    ],
)
async def test_bad_requests_are_answered_failed(server: Service, data: bytes, reason: str) -> None:
    answer = answer_of(await exchange(server, data))
    assert answer["result"] == "failed"
    assert answer["reason"] == reason
    await assert_still_serving(server)
    assert server.catalog.find() == [] or all(
        r.session_id == "after" for r in server.catalog.find()
    )


async def test_too_many_fields_within_size_limit(server: Service) -> None:
    data = b"cmd=RecordStartRequest&id=1&" + b"&".join(b"k%d=" % i for i in range(200)) + b"\n"
    assert answer_of(await exchange(server, data))["reason"] == "too_many_fields"


async def test_a_megabyte_without_terminator_is_refused_and_closed(server: Service) -> None:
    answer = await exchange(
        server, b"cmd=RecordStartRequest&id=" + b"9" * (1 << 20), wait_close=True
    )
    assert answer_of(answer) == {
        "cmd": "RecordStartResponse",
        "id": "",
        "result": "failed",
        "reason": "too_large",
        "server": "",
        "port": "",
    }
    await assert_still_serving(server)


async def test_duplicate_id_on_the_connection(server: Service) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.control_port)
    start = START.format(id="77", codec="PCMA").encode() + b"\n"
    writer.write(start)
    first = answer_of(await asyncio.wait_for(reader.readline(), 5))
    writer.write(start)
    second = answer_of(await asyncio.wait_for(reader.readline(), 5))
    assert first["result"] == "success"
    assert second == {
        "cmd": "RecordStartResponse",
        "id": "77",
        "result": "failed",
        "reason": "duplicate_id",
        "server": "",
        "port": "",
    }
    writer.write(b"cmd=RecordStopRequest&id=77\n")
    assert answer_of(await asyncio.wait_for(reader.readline(), 5))["result"] == "success"
    writer.close()
    await wait_catalogued(server)
    assert len(server.catalog.find()) == 1


async def test_non_utf8_and_traversal_in_every_text_field(server: Service) -> None:
    hostile = "../../../../etc/passwd"
    fields = {
        "device": hostile,
        "local_number": "..",
        "remote_number": "/root/.ssh/x",
        "local_name": "..\\..\\win",
        "remote_name": hostile,
        "dir": "../out",
    }
    call = PhoneCall(
        "127.0.0.1",
        server.control_port,
        session_id="../../id",
        codec="PCMU",
        device=fields["device"],
        local_number=fields["local_number"],
        remote_number=fields["remote_number"],
        local_name=fields["local_name"],
        remote_name=fields["remote_name"],
        direction=fields["dir"],
    )
    assert (await call.start())["result"] == "success"
    await call.send_packets(rtp_packets("PCMU", encoded("PCMU"))[:5], realtime=False)
    await wait_received(server, "../../id", 5)
    await call.stop()
    await call.close()
    # Raw Latin-1 bytes (not UTF-8) in names.
    raw = (
        b"cmd=RecordStartRequest&id=lat1&device=0c383e0e709a&remote_number=2011"
        b"&remote_name=Jos\xe9+M\xfcller&local_number=3001&local_name=%C0%AF..%2F&dir=in&codec=PCMA\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.control_port)
    writer.write(raw)
    assert answer_of(await asyncio.wait_for(reader.readline(), 5))["result"] == "success"
    writer.write(b"cmd=RecordStopRequest&id=lat1&reason=x\n")
    assert answer_of(await asyncio.wait_for(reader.readline(), 5))["result"] == "success"
    writer.close()
    await wait_catalogued(server)
    rows = {r.session_id: r for r in server.catalog.find()}
    assert rows["../../id"].remote_name == hostile
    assert rows["lat1"].remote_name == "José Müller"
    root = server.root.resolve()
    for rec in rows.values():
        path = (root / rec.path).resolve()
        assert path.is_relative_to(root) and path.is_file()
        assert ".." not in Path(rec.path).parts
    files = sorted(p for p in root.rglob("*.wav") if p.is_file())
    assert len(files) == 2
    # Beside each, its sidecar; callrec's own files stay in .callrec.
    assert sorted(p for p in root.rglob("*.json")) == [f.with_name(f.name + ".json") for f in files]


async def test_busy_when_session_limit_reached(tmp_path: Path) -> None:
    srv = Service(server_settings(tmp_path, max_sessions=1))
    await srv.start()
    try:
        a = PhoneCall("127.0.0.1", srv.control_port, session_id="a", codec="PCMA")
        b = PhoneCall("127.0.0.1", srv.control_port, session_id="b", codec="PCMA")
        assert (await a.start())["result"] == "success"
        answer = await b.start()
        assert (answer["result"], answer["reason"]) == ("failed", "busy")
        await a.stop()
        await a.close()
        await b.close()
    finally:
        await srv.stop()


async def test_busy_when_port_range_exhausted(tmp_path: Path) -> None:
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    srv = Service(server_settings(tmp_path, media_port_min=port, media_port_max=port))
    await srv.start()
    try:
        a = PhoneCall("127.0.0.1", srv.control_port, session_id="a", codec="PCMA")
        b = PhoneCall("127.0.0.1", srv.control_port, session_id="b", codec="PCMA")
        assert (await a.start())["port"] == str(port)
        answer = await b.start()
        assert (answer["result"], answer["reason"]) == ("failed", "busy")
        await a.stop()
        await a.close()
        # The port is free again once the session ended.
        c = PhoneCall("127.0.0.1", srv.control_port, session_id="c", codec="PCMA")
        assert (await c.start())["port"] == str(port)
        await c.stop()
        await c.close()
        await b.close()
    finally:
        await srv.stop()


async def test_hostile_rtp_is_counted_and_survived(server: Service) -> None:
    good = rtp_packets("PCMA", encoded("PCMA"))[:20]
    junk: list[bytes] = [
        b"",
        b"\x80",
        b"\x00" * 12,  # version 0
        b"\x8f\x08" + bytes(10),  # 15 CSRCs announced, none present
        b"\xa0\x08" + bytes(10) + b"\x01\xff",  # padding longer than the packet
        b"\x90\x08" + bytes(10) + b"\x00\x00\xff\xff",  # extension longer than the packet
        bytes(range(256)) * 4,
    ]
    mixed: list[bytes] = []
    for i, p in enumerate(good):
        mixed.append(p.serialize())
        if i < len(junk):
            mixed.append(junk[i])
    answer = await record(server, "PCMA", mixed, session_id="h")
    rec = only_recording(server)
    samples, _ = read_recording(server, rec.id)
    assert len(samples) == 20 * 160
    assert rec.packets_malformed + rec.packets_other == len(junk)
    assert rec.packets_received == len(mixed)
    assert answer["result"] == "success"


async def test_max_duration_closes_the_recording(tmp_path: Path) -> None:
    srv = Service(server_settings(tmp_path, max_duration=0.3))
    await srv.start()
    try:
        call = PhoneCall("127.0.0.1", srv.control_port, session_id="long", codec="PCMA")
        assert (await call.start())["result"] == "success"
        await call.send_packets(rtp_packets("PCMA", encoded("PCMA"))[:10], realtime=False)
        await wait_idle(srv)  # the engine ended the recording at its longest
        (rec,) = srv.catalog.find()
        assert rec.status == "complete" and rec.stop_reason == "max_duration"
        assert rec.duration == pytest.approx(0.2)
        # The phone's later stop is answered success, and the id can start a new recording.
        assert (await call.stop())["result"] == "success"
        await call.send_raw_control(
            b"cmd=RecordStartRequest&id=long&device=0c383e0e709a&codec=PCMA"
        )
        assert (await call.read_answer(5))["result"] == "success"
        await call.close()
    finally:
        await srv.stop()
