"""Live listening benchmark: what listeners cost the server, and that they cost the
recordings nothing.

A `callrec serve` of its own (default settings: audio written every 0.5 s) records N phone
calls streamed in real time by the phone simulator; L WebSocket listeners (this process)
listen to them, spread over the calls, some of them stalled (they take their first frame,
then read nothing). For each L it prints the server's CPU over the same window, the CPU per
listener against the run with none, the frames sent, the frames dropped per kind of listener
(the server's per-listener counters, just before the calls end), and
the recordings' packets (received, lost, late: the loss must be 0) and whether each WAV
holds the whole call, and how old the newest audio of each frame was when it reached a
listener (from its packet's sending; the browser then plays it 0.15 s later). Every run is
written as JSON under --out.

    .venv/bin/python benchmarks/listen.py --calls 20 --seconds 40 --listeners 0,1,10,50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from callrec.catalog import Catalog
from callrec.codecs import get_codec
from callrec.sim.phone import PhoneCall, build_packets
from callrec.web.security import hash_password, new_api_token

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TICK = os.sysconf("SC_CLK_TCK")
#: The phone simulator's packets: 20 ms each.
PACKET_SECONDS = 0.02


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (its threads included) and of its child processes (the
    media workers of ``--workers N``)."""
    total = 0.0
    for one in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def signal_pcm(seconds: float, rate: int, seed: int) -> np.ndarray[Any, Any]:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    x = 0.25 * np.sin(2 * np.pi * (300 + 40 * seed) * t) + 0.02 * rng.standard_normal(t.size)
    return np.clip(x * 32767, -32768, 32767).astype(np.int16)


@dataclass
class ListenerStats:
    stalled: bool
    #: When the call's first packet was sent (this loop's clock), and its sample rate.
    begin: float = 0.0
    rate: int = 8000
    #: Per frame received: how old its newest sample was (since its packet was sent).
    delays: list[float] = field(default_factory=list)
    frames: int = 0
    dropped: int = 0
    ended: bool = False
    close_code: int | None = None


@dataclass
class Run:
    listeners: int
    stalled: int
    calls: int
    seconds: float
    window: float = 0.0
    server_cpu: float = 0.0
    cpu_percent: float = 0.0
    frames_sent: int = 0
    frames_dropped_stalled: int = 0
    frames_dropped_reading: int = 0
    #: What the reading listeners were told they lost (``dropped`` of their messages).
    frames_dropped_told: int = 0
    listeners_ended: int = 0
    delay_median: float = 0.0
    delay_p95: float = 0.0
    delay_max: float = 0.0
    packets_sent: int = 0
    packets_received: int = 0
    packets_lost: int = 0
    packets_late: int = 0
    files_exact: int = 0
    server_dropped_metric: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)


async def listen(url: str, token: str, stats: ListenerStats, stop: asyncio.Event) -> None:
    async with connect(
        url, additional_headers={"authorization": f"Bearer {token}"}, compression=None
    ) as ws:
        await _listen(ws, stats, stop)


async def _listen(ws: ClientConnection, stats: ListenerStats, stop: asyncio.Event) -> None:
    channels = 1
    received = 0
    position = 0
    loop = asyncio.get_running_loop()
    per_packet = round(stats.rate * PACKET_SECONDS)
    try:
        async for message in ws:
            if isinstance(message, str):
                event = json.loads(message)
                if event["event"] == "start":
                    channels = int(event["channels"])
                elif event["event"] == "position":
                    stats.dropped = int(event["dropped"])
                    position = int(event["position"])
                elif event["event"] == "ended":
                    stats.ended = True
                    stats.dropped = int(event["dropped"])
                continue
            stats.frames += 1
            count = len(message) // (2 * channels)
            newest = position + count - 1
            sent_at = stats.begin + (newest // per_packet) * PACKET_SECONDS
            stats.delays.append(loop.time() - sent_at)
            position += count
            received += count
            await ws.send(json.dumps({"received": received}))
            if stats.stalled:
                await stop.wait()  # holds the socket, reads nothing more
                return
    except ConnectionClosed:
        pass
    stats.close_code = ws.close_code


async def one_run(args: argparse.Namespace, count: int) -> Run:
    stalled_count = round(count * args.stalled)
    run = Run(listeners=count, stalled=stalled_count, calls=args.calls, seconds=args.seconds)
    with tempfile.TemporaryDirectory(prefix="callrec-listen-") as tmp:
        tmp_path = Path(tmp)
        database = f"sqlite:///{tmp_path / 'catalog.db'}"
        catalog = Catalog(database)
        catalog.migrate()
        # Two users, so that the server's per-listener counters tell the kinds apart.
        tokens: dict[str, str] = {}
        for name in ("reading", "stalled"):
            user = catalog.create_user(
                name, password_hash=hash_password("bench-password"), role="admin"
            )
            token, token_hash, prefix = new_api_token()
            catalog.create_token(user.id, name="bench", token_hash=token_hash, prefix=prefix)
            tokens[name] = token
        catalog.close()
        control, web = free_port(), free_port()
        low = 30000 + (os.getpid() % 50) * 200
        env = {
            **os.environ,
            "CALLREC_RECORDINGS_DIR": str(tmp_path / "recordings"),
            "CALLREC_DATABASE_URL": database,
            "CALLREC_CONTROL_HOST": "127.0.0.1",
            "CALLREC_CONTROL_PORT": str(control),
            "CALLREC_MEDIA_HOST": "127.0.0.1",
            "CALLREC_MEDIA_PORT_MIN": str(low),
            "CALLREC_MEDIA_PORT_MAX": str(low + 199),
            "CALLREC_WEB_ENABLED": "true",
            "CALLREC_WEB_HOST": "127.0.0.1",
            "CALLREC_WEB_PORT": str(web),
            "CALLREC_SIP_ENABLED": "false",
        }
        log = (tmp_path / "server.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "callrec", "serve", *shlex.split(args.server_args)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            await _wait_port(web, server)
            await _wait_port(control, server)
            await _record(args, run, server.pid, control, web, tokens)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
            log.close()
    return run


async def _wait_port(port: int, server: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        await asyncio.sleep(0.05)
    raise SystemExit(f"the server does not listen on {port}")


async def _record(
    args: argparse.Namespace, run: Run, pid: int, control: int, web: int, tokens: dict[str, str]
) -> None:
    token = tokens["reading"]
    codec = get_codec(args.codec)
    base = f"http://127.0.0.1:{web}"
    calls: list[PhoneCall] = []
    packets: list[list[Any]] = []
    for i in range(args.calls):
        call = PhoneCall(
            "127.0.0.1",
            control,
            session_id=f"{90000 + i}",
            codec=args.codec,
            device=f"0c383e0e{i:04x}",  # one phone each (max_sessions_per_device)
            local_number=f"{3000 + i}",
        )
        calls.append(call)
        pcm = signal_pcm(args.seconds, codec.sample_rate, seed=i)
        packets.append(build_packets(pcm, codec, ssrc=call.ssrc))
    stop = asyncio.Event()
    listeners: list[ListenerStats] = []
    tasks: list[asyncio.Task[Any]] = []
    async with httpx.AsyncClient(
        base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=30
    ) as api:
        for call in calls:
            answer = await call.start()
            assert answer["result"] == "success", answer
        begins: list[float] = []
        sending = []
        for call, p in zip(calls, packets, strict=True):
            begins.append(asyncio.get_running_loop().time())
            sending.append(asyncio.create_task(call.send_packets(p, realtime=True)))
        await asyncio.sleep(1.0)
        live = (await api.get("/api/v1/live")).json()
        uids = [s["uid"] for s in sorted(live, key=lambda s: s["session_id"])]
        assert len(uids) == args.calls, live
        for n in range(run.listeners):
            stats = ListenerStats(
                stalled=n < run.stalled, begin=begins[n % len(uids)], rate=codec.sample_rate
            )
            listeners.append(stats)
            url = f"ws://127.0.0.1:{web}/api/v1/live/{uids[n % len(uids)]}/listen"
            who = tokens["stalled" if stats.stalled else "reading"]
            tasks.append(asyncio.create_task(listen(url, who, stats, stop)))
        await asyncio.sleep(2.0)  # every listener connected and playing
        began, cpu0 = time.monotonic(), cpu_seconds(pid)
        await asyncio.sleep(max(1.0, args.seconds - 5.0))
        run.window = time.monotonic() - began
        run.server_cpu = cpu_seconds(pid) - cpu0
        run.cpu_percent = 100 * run.server_cpu / run.window
        # The server's own counters of each listener, while they are all connected.
        for row in (await api.get("/api/v1/live/listeners")).json():
            if row["username"] == "stalled":
                run.frames_dropped_stalled += row["frames_dropped"]
            else:
                run.frames_dropped_reading += row["frames_dropped"]
        for task in sending:
            run.packets_sent += await task
        for call in calls:
            stop_answer = await call.stop("hangup")
            assert stop_answer["result"] == "success", stop_answer
            await call.close()
        await asyncio.sleep(1.0)  # the last tick, the finish, the listeners' end
        metrics = (await api.get("/metrics")).text
        for line in metrics.splitlines():
            if line.startswith("callrec_listen_frames_sent_total "):
                run.frames_sent = int(float(line.split()[1]))
            if line.startswith("callrec_listen_dropped_frames_total "):
                run.server_dropped_metric = float(line.split()[1])
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        rows = await _rows(api, args.calls)
    run.frames_dropped_told = sum(s.dropped for s in listeners if not s.stalled)
    run.listeners_ended = sum(1 for s in listeners if s.ended and not s.stalled)
    delays = sorted(d for s in listeners if not s.stalled for d in s.delays)
    if delays:
        run.delay_median = delays[len(delays) // 2]
        run.delay_p95 = delays[int(len(delays) * 0.95)]
        run.delay_max = delays[-1]
    for row in rows:
        run.packets_received += row["counters"]["received"]
        run.packets_lost += row["counters"]["lost"]
        run.packets_late += row["counters"]["late"]
        run.rows.append(
            {k: row[k] for k in ("session_id", "duration", "status", "sha256", "counters")}
        )
    run.files_exact = sum(1 for row in rows if _exact(row, codec.sample_rate, args.seconds))


def _exact(row: dict[str, Any], rate: int, seconds: float) -> bool:
    """The file holds the whole call: as many samples as were sent."""
    return row["status"] == "complete" and abs(row["duration"] - seconds) < 1 / rate + 1e-9


async def _rows(api: httpx.AsyncClient, calls: int) -> list[dict[str, Any]]:
    for _ in range(300):
        page = (await api.get("/api/v1/recordings", params={"limit": 500})).json()
        items: list[dict[str, Any]] = page["items"]
        if len(items) == calls and all(r["status"] == "complete" for r in items):
            return items
        await asyncio.sleep(0.1)
    raise SystemExit("the recordings were not catalogued as complete")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds else "-"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--codec", default="PCMA")
    p.add_argument("--listeners", default="0,1,10,50", help="comma-separated listener counts")
    p.add_argument("--stalled", type=float, default=0.2, help="share of stalled listeners")
    p.add_argument("--server-args", default="", help="extra `callrec serve` arguments")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    runs = [asyncio.run(one_run(args, int(n))) for n in args.listeners.split(",")]
    base = next((r for r in runs if r.listeners == 0), None)
    print(
        "| listeners (stalled) | server CPU | CPU per listener | frames sent | dropped: "
        "stalled / reading | audio age at arrival: median / p95 / max | packets received / "
        "lost / late | files whole |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        per = "-"
        if base is not None and r.listeners:
            per = f"{(r.cpu_percent - base.cpu_percent) / r.listeners:.3f} %"
        print(
            f"| {r.listeners} ({r.stalled}) | {r.cpu_percent:.1f} % | {per} | {r.frames_sent} "
            f"| {r.frames_dropped_stalled} / {r.frames_dropped_reading} "
            f"| {_ms(r.delay_median)} / {_ms(r.delay_p95)} / {_ms(r.delay_max)} "
            f"| {r.packets_received} / {r.packets_lost} / {r.packets_late} "
            f"| {r.files_exact}/{r.calls} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    workers = "-workers" if "--workers" in args.server_args else ""
    out = args.out / f"listen-{args.codec}-{args.calls}x{args.seconds:g}s{workers}-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "args": {k: str(v) for k, v in vars(args).items()},
                "runs": [asdict(r) for r in runs],
            },
            indent=1,
        )
    )
    print(f"written {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
