"""Churn soak: thousands of start/stream/stop cycles against a server in this process.

Prints cycles, open descriptors, threads, RSS, ports and sessions before and after. A leak
shows as a difference that grows with --cycles.

    .venv/bin/python benchmarks/soak.py --cycles 5000 [--codec G722] [--phone-framing]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from callrec.config import Settings
from callrec.service import Service
from callrec.sim.soak import churn


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="callrec-soak-") as tmp:
        settings = Settings(
            control_host="127.0.0.1",
            control_port=0,
            media_host="127.0.0.1",
            media_port_min=0,
            media_port_max=0,
            recordings_dir=Path(tmp) / "recordings",
            database_url=f"sqlite:///{tmp}/catalog.db",
            web_enabled=False,
            sip_enabled=False,
        )
        server = Service(settings)
        await server.start()
        began = time.perf_counter()
        try:
            report = await churn(
                server,
                args.cycles,
                codec=args.codec,
                packets_per_call=args.packets,
                terminator=b"" if args.phone_framing else b"\n",
            )
        finally:
            await server.stop()
        elapsed = time.perf_counter() - began
        for line in report.lines():
            print(line)
        print(f"time: {elapsed:.1f} s ({report.cycles / elapsed:.0f} calls/s)")
        return 1 if report.failed or report.after.fds > report.before.fds else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5000)
    parser.add_argument("--codec", default="PCMA")
    parser.add_argument("--packets", type=int, default=5, help="RTP packets per call")
    parser.add_argument(
        "--phone-framing", action="store_true", help="no message terminator, as phones do"
    )
    raise SystemExit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
