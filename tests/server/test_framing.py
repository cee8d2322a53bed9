"""Every framing over a real socket, sent whole and one byte at a time."""

from __future__ import annotations

import asyncio
import socket

import pytest

from callrec.service import Service
from tests.support.waiting import wait_catalogued

START = (
    b"cmd=RecordStartRequest&id={id}&device=0c383e0e709a&remote_number=2011&remote_name="
    b"&local_number=3001&local_name=&dir=in&codec=PCMU"
)
STOP = (
    b"cmd=RecordStopRequest&id={id}&remote_number=2011&remote_name=&local_number=3001"
    b"&local_name=&reason="
)


async def send(writer: asyncio.StreamWriter, data: bytes, bytewise: bool) -> None:
    if not bytewise:
        writer.write(data)
        await writer.drain()
        return
    for i in range(len(data)):
        writer.write(data[i : i + 1])
        await writer.drain()
        await asyncio.sleep(0.001)  # one byte per segment: the server reads them one by one


async def read_answer(reader: asyncio.StreamReader, term: bytes) -> bytes:
    if term:
        return await asyncio.wait_for(reader.readuntil(term), 5)
    return await asyncio.wait_for(reader.read(4096), 5)


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("term", [b"", b"\r\n", b"\n", b"\0"], ids=["none", "crlf", "lf", "nul"])
async def test_start_and_stop_in_every_framing(
    server: Service, term: bytes, bytewise: bool
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.control_port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sid = b"f%d" % len(term)
    await send(writer, START.replace(b"{id}", sid) + term, bytewise)
    answer = await read_answer(reader, term)
    assert answer.startswith(
        b"cmd=RecordStartResponse&id=" + sid + b"&result=success&reason=&server=127.0.0.1&port="
    )
    assert answer.endswith(term) and answer.count(b"&") == 5
    if not term:
        assert answer[-1:].isdigit()
    await send(writer, STOP.replace(b"{id}", sid) + term, bytewise)
    answer = await read_answer(reader, term)
    assert answer == b"cmd=RecordStopResponse&id=" + sid + b"&result=success" + term
    writer.close()
    await wait_catalogued(server)  # record first: the row follows the answer
    (rec,) = server.catalog.find()
    assert rec.status == "complete" and rec.direction == "in"


async def test_two_sessions_on_one_connection_in_one_write(server: Service) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.control_port)
    writer.write(START.replace(b"{id}", b"a") + b"\n" + START.replace(b"{id}", b"b") + b"\n")
    first = await asyncio.wait_for(reader.readline(), 5)
    second = await asyncio.wait_for(reader.readline(), 5)
    assert b"id=a&result=success" in first and b"id=b&result=success" in second
    assert first.split(b"port=")[1] != second.split(b"port=")[1]
    writer.write(STOP.replace(b"{id}", b"b") + b"\n" + STOP.replace(b"{id}", b"a") + b"\n")
    assert b"id=b&result=success" in await asyncio.wait_for(reader.readline(), 5)
    assert b"id=a&result=success" in await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    await wait_catalogued(server)  # record first: the row follows the answer
    assert sorted(r.session_id for r in server.catalog.find()) == ["a", "b"]
