"""What a power cut loses: `callrec serve` killed at random moments mid-call, each call's WAV
read as the disk has it, per ``sync_mode``.

Each round starts a server of its own (loopback, a temporary directory on the filesystem of
``--dir``), has ``--calls`` simulated phones stream real-time PCMA, and kills it (SIGKILL) at
a seeded random moment between ``--kill-min`` and ``--kill-max`` seconds after the phones
began. Then, for each call:

* **sent**: the audio the phone had sent by the kill;
* **crash**: what the file holds in the page cache, which is what a ``kill -9`` leaves;
* **disk**: what the disk holds for certain: the file up to its first page that is dirty or
  under write-back (cachestat; the header page aside, see ``tests/support/pagecache.py``).
  A power cut at that moment leaves at least this; the partly written page it stops at may
  still hold some older audio on the disk, so this is a lower bound by up to one page
  (4 KiB: 0.26 s of 8 kHz audio).

Prints a row per round and, per mode, the loss (sent - disk) over every call.

    .venv/bin/python benchmarks/power_cut.py --modes syncfs,off --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' helpers: a server process, the page cache

from tests.support import pagecache  # noqa: E402
from tests.support.data import encoded  # noqa: E402
from tests.support.net import free_tcp_port  # noqa: E402
from tests.support.rtp import rtp_packets  # noqa: E402
from tests.support.serve import start_serve  # noqa: E402

from callrec.catalog import Catalog  # noqa: E402
from callrec.config import SYNC_MODES  # noqa: E402
from callrec.media.wav import HEADER_SIZE  # noqa: E402
from callrec.sim.phone import PhoneCall  # noqa: E402

BYTE_RATE = 16000  # 8 kHz mono 16-bit
PACKET_SECONDS = 0.02


async def one_round(
    work: Path, mode: str, calls: int, kill_at: float, interval: float
) -> list[dict[str, Any]]:
    port = free_tcp_port()
    proc: subprocess.Popen[bytes] = start_serve(
        work, port, sync_mode=mode, sync_interval=interval, max_sessions=calls + 10
    )
    packets = rtp_packets("PCMA", encoded("PCMA") * (int(kill_at / 2) + 3))
    phones = [
        PhoneCall(
            "127.0.0.1",
            port,
            session_id=f"p{i}",
            codec="PCMA",
            remote_number=str(i),
            answer_timeout=10,
        )
        for i in range(calls)
    ]
    began: dict[str, float] = {}
    loop = asyncio.get_running_loop()

    async def stream(call: PhoneCall) -> None:
        if (await call.start()).get("result") != "success":
            return
        began[call.session_id] = loop.time()
        await call.send_packets(packets, realtime=True)

    tasks = [asyncio.create_task(stream(c)) for c in phones]
    try:
        await asyncio.sleep(kill_at)
        proc.send_signal(signal.SIGKILL)
        killed = loop.time()
        proc.wait(10)
        rows: list[dict[str, Any]] = []
        with Catalog(f"sqlite:///{work / 'catalog.db'}") as catalog:
            paths = {r.session_id: work / "recordings" / r.path for r in catalog.find(limit=10_000)}
        for sid, start in began.items():
            path = paths.get(sid)
            if path is None or not path.exists():
                continue
            sent = min(len(packets), int((killed - start) / PACKET_SECONDS) + 1)
            states = pagecache.page_states(path)
            size = path.stat().st_size
            disk = pagecache.disk_copy(path, work / "copy.wav")
            if "." not in states:
                disk = 0  # no page was ever written back: not even the header's older copy
            rows.append(
                {
                    "mode": mode,
                    "call": sid,
                    "sent_s": sent * PACKET_SECONDS,
                    "crash_s": max(size - HEADER_SIZE, 0) / BYTE_RATE,
                    "disk_s": max(disk - HEADER_SIZE, 0) / BYTE_RATE,
                    "pages": len(states),
                    "pages_in_memory": states.count("D"),
                }
            )
        return rows
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for call in phones:
            await call.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def summary(rows: list[dict[str, Any]]) -> str:
    loss = [r["sent_s"] - r["disk_s"] for r in rows]
    crash = [r["sent_s"] - r["crash_s"] for r in rows]
    return (
        f"{len(rows)} calls: power cut loses median {statistics.median(loss):.2f} s, "
        f"max {max(loss):.2f} s (kill -9: median {statistics.median(crash):.2f} s, "
        f"max {max(crash):.2f} s)"
    )


async def main_async(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    modes = args.modes.split(",")
    every: list[dict[str, Any]] = []
    base = args.dir or Path(tempfile.gettempdir())
    print(
        "| round | mode | kill at s | calls | sent s | crash keeps s (min-max) "
        "| disk keeps s (min-max) | loss s median / max | pages in memory / pages |"
    )
    print("|---" * 9 + "|")
    for rnd in range(args.rounds):
        order = modes if rnd % 2 == 0 else modes[::-1]
        for mode in order:
            kill_at = rng.uniform(args.kill_min, args.kill_max)
            with tempfile.TemporaryDirectory(prefix="callrec-cut-", dir=base) as tmp:
                rows = await one_round(Path(tmp), mode, args.calls, kill_at, args.interval)
            for r in rows:
                r["round"] = rnd + 1
                r["kill_at_s"] = kill_at
            every.extend(rows)
            if not rows:
                print(f"| {rnd + 1} | {mode} | {kill_at:.2f} | 0 | - | - | - | - | - |")
                continue
            loss = [r["sent_s"] - r["disk_s"] for r in rows]
            print(
                f"| {rnd + 1} | {mode} | {kill_at:.2f} | {len(rows)} "
                f"| {statistics.median(r['sent_s'] for r in rows):.2f} "
                f"| {min(r['crash_s'] for r in rows):.2f}-{max(r['crash_s'] for r in rows):.2f} "
                f"| {min(r['disk_s'] for r in rows):.2f}-{max(r['disk_s'] for r in rows):.2f} "
                f"| {statistics.median(loss):.2f} / {max(loss):.2f} "
                f"| {sum(r['pages_in_memory'] for r in rows)} / {sum(r['pages'] for r in rows)} |",
                flush=True,
            )
    for mode in modes:
        rows = [r for r in every if r["mode"] == mode]
        if rows:
            print(f"{mode}: {summary(rows)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(every, indent=2) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", default="syncfs,off", help=f"comma-separated: {SYNC_MODES}")
    p.add_argument("--rounds", type=int, default=5, help="kills per mode")
    p.add_argument("--calls", type=int, default=10, help="phones recording at each kill")
    p.add_argument("--kill-min", type=float, default=3.0, help="seconds after the calls began")
    p.add_argument("--kill-max", type=float, default=8.0)
    p.add_argument("--interval", type=float, default=0.5, help="the server's sync_interval")
    p.add_argument("--seed", type=int, default=20261201)
    p.add_argument("--dir", type=Path, default=None, help="where the server writes")
    p.add_argument("--json", type=Path, default=None, help="also write every call here")
    args = p.parse_args()
    try:
        pagecache.check_supported(args.dir or Path(tempfile.gettempdir()))
    except pagecache.Unsupported as exc:
        raise SystemExit(f"cannot tell what the disk holds here: {exc}") from None
    began = time.monotonic()
    asyncio.run(main_async(args))
    print(f"took {time.monotonic() - began:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
