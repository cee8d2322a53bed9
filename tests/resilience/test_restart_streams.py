"""The server is killed (SIGKILL) while its calls' phones keep streaming to their ports, as
phones behind one NAT address do; a new server takes new calls from the same address. Every
new recording holds only its own audio (issue 14 item 2): the dead server's ports rest, so
none is handed to a new call while an old phone still streams to it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import numpy as np

from callrec.catalog import Catalog
from callrec.codecs import get_codec
from callrec.rtp.packet import RtpPacket
from callrec.sim.phone import PhoneCall
from tests.support.audio import read_wav
from tests.support.net import free_tcp_port, free_udp_block
from tests.support.serve import start_serve, terminate

OLD = 10
NEW = 10
NEW_PACKETS = 100
#: Twice the calls of each generation: without rests, new calls would land on old ports.
PORTS = OLD + NEW


def _packets(byte: int, count: int, ssrc: int) -> list[RtpPacket]:
    """A call whose every sample is the A-law ``byte``: its audio says whose it is."""
    return [
        RtpPacket(
            payload_type=8,
            sequence_number=i,
            timestamp=160 * i,
            ssrc=ssrc,
            payload=bytes([byte]) * 160,
        )
        for i in range(count)
    ]


async def _old_phone(port: int, k: int, started: asyncio.Event, done: asyncio.Event) -> None:
    call = PhoneCall("127.0.0.1", port, session_id=f"old-{k}", codec="PCMA")
    try:
        assert (await call.start())["result"] == "success"
        started.set()
        packets = _packets(0x10 + k, 1500, ssrc=0x1000 + k)  # 30 s at most
        for i in range(0, len(packets), 5):
            if done.is_set():
                break
            # Streams on when the server is gone, as phones do.
            await call.send_packets(packets[i : i + 5], realtime=True, stop_on_hangup=False)
    finally:
        await call.close()


async def _new_phone(port: int, k: int) -> None:
    call = PhoneCall("127.0.0.1", port, session_id=f"new-{k}", codec="PCMA")
    try:
        assert (await call.start())["result"] == "success"
        await call.send_packets(_packets(0xA0 + k, NEW_PACKETS, 0x2000 + k), realtime=True)
        await asyncio.sleep(0.2)
        await call.stop()
    finally:
        await call.close()


async def test_new_calls_never_record_old_phones_still_streaming(tmp_path: Path) -> None:
    port = free_tcp_port()
    low = free_udp_block(PORTS)
    ports = {"media_port_min": low, "media_port_max": low + PORTS - 1}
    proc = start_serve(tmp_path, port, **ports)
    done = asyncio.Event()
    olds = []
    for k in range(OLD):
        started = asyncio.Event()
        olds.append(asyncio.create_task(_old_phone(port, k, started, done)))
        await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    try:
        proc = start_serve(tmp_path, port, **ports)
        await asyncio.gather(*(_new_phone(port, k) for k in range(NEW)))
    finally:
        done.set()
        for task in olds:
            with contextlib.suppress(Exception):
                await task
        assert terminate(proc, 30) == 0

    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        rows = {r.session_id: r for r in catalog.find(limit=1000)}
    decode = get_codec("PCMA").decoder().decode
    for k in range(NEW):
        rec = rows[f"new-{k}"]
        assert rec.status == "complete", rec
        frames, _ = read_wav(tmp_path / "recordings" / rec.path)
        own = np.frombuffer(decode(bytes([0xA0 + k])), "<i2")[0]
        assert len(frames) == NEW_PACKETS * 160, (k, len(frames))
        np.testing.assert_array_equal(frames, np.full(len(frames), own, np.int16), f"new-{k}")
        assert rec.packets_received == NEW_PACKETS and rec.packets_foreign == 0
