"""Hostile control peers while a well-behaved phone records: the phone is served promptly,
the hostile connections are answered or closed, and none of them is left holding a socket."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callrec.service import Service
from callrec.sim.phone import PhoneCall
from tests.support.data import encoded
from tests.support.rtp import rtp_packets
from tests.support.settings import server_settings
from tests.support.waiting import wait_catalogued, wait_for, wait_received

IDLE_CONNECTIONS = 2000
IDLE_TIMEOUT = 1.0


@pytest.fixture
async def strict_server(tmp_path: Path) -> AsyncIterator[Service]:
    srv = Service(
        server_settings(
            tmp_path,
            connection_idle_timeout=IDLE_TIMEOUT,
            max_bad_requests=5,
            # Every peer here is 127.0.0.1: the per-source cap would close the attackers
            # before they attack (tests/resilience/test_access_limits.py tests the cap).
            max_connections_per_source=IDLE_CONNECTIONS + 100,
        )
    )
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def closed_by_server(reader: asyncio.StreamReader, limit: float) -> bool:
    """True once the server closes the connection (EOF or reset) within ``limit`` seconds."""
    try:
        async with asyncio.timeout(limit):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def slowloris(port: int, seconds: float) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        deadline = time.monotonic() + seconds
        for byte in b"cmd=RecordStartRequest&id=1&codec=PCMA" * 10:
            if time.monotonic() > deadline:
                return False
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)  # the attack: one byte every 0.2 s
            if reader.at_eof():
                return True
        return False
    except ConnectionError:
        return True
    finally:
        writer.close()


async def blast(port: int, data: bytes) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
    except ConnectionError:
        return True
    try:
        return await closed_by_server(reader, 10)
    finally:
        writer.close()


async def test_hostile_control_peers_do_not_starve_a_phone(
    strict_server: Service,
) -> None:
    port = strict_server.control_port
    rng = random.Random(1234)
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(IDLE_CONNECTIONS)]
    attacks = [asyncio.create_task(slowloris(port, 20)) for _ in range(20)]
    attacks += [
        asyncio.create_task(blast(port, rng.randbytes(65536))) for _ in range(5)
    ]  # random bytes
    attacks += [asyncio.create_task(blast(port, b"x" * (1 << 20))) for _ in range(3)]
    attacks += [
        asyncio.create_task(
            blast(port, b"cmd=RecordStartRequest&" + b"&".join(b"k%d=v" % i for i in range(10_000)))
        )
        for _ in range(3)
    ]
    attacks += [asyncio.create_task(blast(port, b"garbage\n" * 50)) for _ in range(5)]

    # Meanwhile a phone records a call and is answered at once.
    call = PhoneCall("127.0.0.1", port, session_id="good", codec="PCMA", answer_timeout=5)
    began = time.monotonic()
    answer = await call.start()
    answered_in = time.monotonic() - began
    assert answer["result"] == "success"
    await call.send_packets(rtp_packets("PCMA", encoded("PCMA"))[:50], realtime=False)
    await wait_received(strict_server, "good", 50)
    assert (await call.stop())["result"] == "success"
    await call.close()
    assert answered_in < 3.0, f"start answered after {answered_in:.2f} s"

    # Every attacker was closed by the server: none holds its connection.
    results = await asyncio.gather(*attacks)
    assert all(results), results
    # Silent connections are closed after the idle timeout.
    closed = await asyncio.gather(*(closed_by_server(r, IDLE_TIMEOUT + 10) for r, _ in idle))
    assert all(closed)
    for _, w in idle:
        w.close()
    await wait_for(
        lambda: strict_server.held().connections == 0,
        what="the server to let go of every connection",
    )
    await wait_catalogued(strict_server)  # record first: the row follows the answer
    (rec,) = strict_server.catalog.find()
    assert rec.status == "complete" and rec.duration == 1.0
