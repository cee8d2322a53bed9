"""A burst of RTP into one phone session, per media_rcvbuf: how much the socket queue held,
how much the kernel dropped (issue 13 item 10).

An in-process server (loopback, free ports, its files in a temporary directory) answers a
phone's start; the phone then sends ``--packets`` PCMA packets (20 ms each) in one go, with
no await in between, so the server's loop cannot read until the burst is over (the worst case
of ``callrec phone --fast``, or a phone flushing its jitter buffer), and stops. The catalogue
row says what was received and what the kernel dropped; every run of every size is printed.

    .venv/bin/python benchmarks/burst.py
    .venv/bin/python benchmarks/burst.py --rcvbuf 262144 --rcvbuf 1048576 --packets 3000 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
from pathlib import Path

from callrec.config import Settings
from callrec.net import new_socket, size_receive_buffer
from callrec.rtp.packet import RtpPacket
from callrec.service import Service
from callrec.sim.phone import PhoneCall


def packets(count: int) -> list[RtpPacket]:
    return [
        RtpPacket(
            payload_type=8,
            sequence_number=i % 65536,
            timestamp=160 * i,
            ssrc=0x5EED,
            payload=bytes([0xD5]) * 160,
        )
        for i in range(count)
    ]


async def one_run(rcvbuf: int, burst: list[RtpPacket], where: Path) -> tuple[int, int, float]:
    settings = Settings(
        control_host="127.0.0.1",
        control_port=0,
        media_host="127.0.0.1",
        media_port_min=0,
        media_port_max=0,
        media_rcvbuf=rcvbuf,
        recordings_dir=where / "recordings",
        database_url=f"sqlite:///{where / 'catalog.db'}",
        web_enabled=False,
        sip_enabled=False,
    )
    server = Service(settings)
    await server.start()
    try:
        call = PhoneCall("127.0.0.1", server.control_port, session_id="burst", codec="PCMA")
        answer = await call.start()
        target = (answer["server"], int(answer["port"]))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for packet in burst:
                udp.sendto(packet.serialize(), target)
        await call.stop("hangup")
        await call.close()
        for _ in range(500):
            rows = server.catalog.find(limit=1)
            if rows and rows[0].finished:
                break
            await asyncio.sleep(0.01)
        (row,) = server.catalog.find(limit=1)
        return row.packets_received, row.packets_kernel_dropped, row.duration or 0.0
    finally:
        await server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rcvbuf", type=int, action="append", help="bytes (repeatable)")
    parser.add_argument("--packets", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sizes = args.rcvbuf or [256 * 1024, 1024 * 1024]
    burst = packets(args.packets)
    print(f"{'media_rcvbuf':>12} {'granted':>9} {'run':>3} {'sent':>6} {'received':>8}", end="")
    print(f" {'kernel dropped':>14} {'seconds recorded':>16}")
    for size in sizes:
        with new_socket("127.0.0.1") as probe:
            granted = size_receive_buffer(probe, size).granted
        for run in range(1, args.runs + 1):
            with tempfile.TemporaryDirectory() as tmp:
                received, dropped, seconds = await one_run(size, burst, Path(tmp))
            print(
                f"{size:>12} {granted:>9} {run:>3} {len(burst):>6} {received:>8}"
                f" {dropped:>14} {seconds:>16.2f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
