"""UDP flood at a call's media port: how many foreign packets per second a call survives
with 0 loss (issue 14).

Each run starts ``callrec serve`` as a process of its own (loopback, free ports, its default
settings otherwise), records one phone call of ``--seconds`` of PCMA sent in real time from
127.0.0.1, and meanwhile a second process floods the call's port from 127.0.0.2 with
well-formed RTP (another SSRC, 172-byte datagrams) at a target rate (0: as fast as one core
sends). After the stop the catalogue row is read and the WAV checked against the decode of
what the phone sent, sample by sample. Printed per run: the flood's target and achieved
rate, the call's packets received, lost and foreign, the WAV's agreement with what was sent,
and the kernel's UDP receive-buffer errors during the run (``/proc/net/snmp`` RcvbufErrors,
the whole machine). ``--no-latch`` runs the server with ``media_latch = false``: the
filtering in Python of the last release, for comparison. Every run is printed and saved
(JSON under benchmarks/results/), not only the best one.

    .venv/bin/python benchmarks/flood.py                      # 0 (max), 20k, 50k pps; 3 runs
    .venv/bin/python benchmarks/flood.py --rate 20000 --runs 5 --no-latch
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import signal
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from callrec.catalog import Catalog
from callrec.codecs import get_codec
from callrec.rtp.packet import RtpPacket
from callrec.sim.phone import PhoneCall

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.support: free ports, a served process

from tests.support.net import free_tcp_port  # noqa: E402
from tests.support.serve import start_serve, terminate  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FLOODER = "127.0.0.2"


@dataclass
class Run:
    latch: bool
    target_pps: int
    achieved_pps: float
    flood_packets: int
    phone_packets: int
    received: int
    lost: int
    foreign: int
    wav_frames: int
    wav_exact: bool
    rcvbuf_errors: int


def _rcvbuf_errors() -> int:
    """The kernel's UDP receive-buffer overflows so far (all sockets of the machine)."""
    try:
        lines = Path("/proc/net/snmp").read_text().splitlines()
    except OSError:
        return -1
    udp = [line.split() for line in lines if line.startswith("Udp:")]
    return int(udp[1][udp[0].index("RcvbufErrors")])


def _flood(port: int, pps: int, seconds: float, sent: multiprocessing.Value) -> None:  # type: ignore[type-arg]
    datagram = RtpPacket(
        payload_type=8, sequence_number=1, timestamp=1, ssrc=666, payload=bytes(160)
    ).serialize()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((FLOODER, 0))
    count = 0
    begin = time.monotonic()
    end = begin + seconds
    while (now := time.monotonic()) < end:
        if pps:
            due = int((now - begin) * pps)
            burst = due - count
            if burst <= 0:
                time.sleep(0.0005)
                continue
        else:
            burst = 256
        for _ in range(burst):
            with contextlib.suppress(OSError):  # a transient ENOBUFS: flood on
                sock.sendto(datagram, ("127.0.0.1", port))
            count += 1
    sent.value = count


async def _one(seconds: float, pps: int, latch: bool) -> Run:
    packets_n = int(seconds * 50)
    rng = np.random.default_rng(7)
    payloads = [bytes(rng.integers(0, 256, 160, dtype=np.uint8)) for _ in range(packets_n)]
    packets = [
        RtpPacket(payload_type=8, sequence_number=i, timestamp=160 * i, ssrc=0x1234, payload=p)
        for i, p in enumerate(payloads)
    ]
    with tempfile.TemporaryDirectory(prefix="callrec-flood-") as tmp:
        tmp_path = Path(tmp)
        port = free_tcp_port()
        proc = start_serve(tmp_path, port, media_latch=latch)
        before = _rcvbuf_errors()
        sent = multiprocessing.Value("q", 0)
        flooder: multiprocessing.Process | None = None
        try:
            call = PhoneCall("127.0.0.1", port, session_id="flood", codec="PCMA")
            answer = await call.start()
            media_port = int(answer["port"])
            flooder = multiprocessing.Process(
                target=_flood, args=(media_port, pps, seconds + 2.0, sent)
            )
            flooder.start()
            await asyncio.sleep(1.0)  # the flood is on before the phone's first packet
            await call.send_packets(packets, realtime=True)
            await asyncio.sleep(0.5)
            await call.stop()
            await call.close()
            flooder.join()
        finally:
            if flooder is not None and flooder.is_alive():
                flooder.kill()
            terminate(proc, 30)
        errors = _rcvbuf_errors() - before if before >= 0 else -1
        with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
            (row,) = catalog.find(limit=10)
        import soundfile

        frames, _ = soundfile.read(tmp_path / "recordings" / row.path, dtype="int16")
        reference = np.frombuffer(get_codec("PCMA").decoder().decode(b"".join(payloads)), "<i2")
        exact = len(frames) == len(reference) and bool(np.array_equal(frames, reference))
        return Run(
            latch=latch,
            target_pps=pps,
            achieved_pps=round(sent.value / (seconds + 2.0)),
            flood_packets=int(sent.value),
            phone_packets=packets_n,
            received=row.packets_received,
            lost=row.packets_lost,
            foreign=row.packets_foreign,
            wav_frames=len(frames),
            wav_exact=exact,
            rcvbuf_errors=errors,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, action="append", help="flood packets/s (0: max)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-latch", action="store_true", help="media_latch = false")
    args = parser.parse_args()
    rates = args.rate or [20_000, 50_000, 0]
    latch = not args.no_latch
    runs: list[Run] = []
    print(
        f"{'latch':>5} {'target':>7} {'achieved':>9} {'flood':>8} {'sent':>5} {'recv':>5} "
        f"{'lost':>5} {'foreign':>8} {'wav exact':>9} {'rcvbuf err':>10}"
    )
    for pps in rates:
        for _ in range(args.runs):
            run = asyncio.run(_one(args.seconds, pps, latch))
            runs.append(run)
            print(
                f"{'on' if run.latch else 'off':>5} {run.target_pps or 'max':>7} "
                f"{run.achieved_pps:>9} {run.flood_packets:>8} {run.phone_packets:>5} "
                f"{run.received:>5} {run.lost:>5} {run.foreign:>8} "
                f"{'yes' if run.wav_exact else 'NO':>9} {run.rcvbuf_errors:>10}",
                flush=True,
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out = RESULTS / f"flood-{'latch' if latch else 'nolatch'}-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "seconds": args.seconds,
                "runs": [asdict(r) for r in runs],
            },
            indent=2,
        )
    )
    print(f"saved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
