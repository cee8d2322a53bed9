"""SIP B2BUA capacity: N calls relayed and recorded at once by a `callrec serve` of its own.

Each call: a SIPp caller (account ``alice``, policy ``always``: recorded from the answer to the
hang-up) -> callrec -> a SIPp callee registered as ``bob``, both streaming 20 ms PCMA RTP
through callrec for --seconds, then BYE. The scenarios are the interop test's
(tests/data/sip: register.xml, callee.xml) and benchmarks/sip/caller.xml. Measured as
benchmarks/ingest.py measures the phone server (docs/performance.md): the CPU of the server's
processes from /proc over the steady window (every call up, none ended), RSS per call (peak
less before the first call), and loss from the catalogue's counters of every recording
(sequence gaps, late packets, kernel drops on the relay's sockets). Exit status 1 when a call
fails in SIPp, a recording is missing or not complete, or a packet is lost.

    .venv/bin/python benchmarks/sip_capacity.py --calls 100 --seconds 30
    .venv/bin/python benchmarks/sip_capacity.py --summary
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import wave
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from ingest import cpu_pressure, machine

from callrec.codecs import get_codec
from callrec.sim.audioloop import AudioLoop
from callrec.sim.meters import ProcessMeter, Sample, process_tree
from callrec.sim.spawn import SpawnedServer, spawn_server

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "sip"
SCENARIOS = ROOT / "tests" / "data" / "sip"
CALLER = ROOT / "benchmarks" / "sip" / "caller.xml"
PASSWORD = "bench-pw"
#: SIPp's RTP ports (caller, callee): below the spawned server's media range (20000-32767).
RTP_BASE = (12000, 16000)
PACKETS_PER_SECOND = 50


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=50, help="concurrent calls")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each call")
    p.add_argument("--rate", type=float, default=20.0, help="calls started per second")
    p.add_argument("--server-args", default="", help="extra `callrec serve` arguments")
    p.add_argument(
        "--media-ports",
        default="",
        metavar="MIN-MAX",
        help="the server's media port range (default: callrec loadtest --spawn's, 20000-32767)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON results")
    p.add_argument("--no-save", action="store_true", help="write no JSON file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--summary", action="store_true", help="every saved result as Markdown")
    return p


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Sipp:
    """One SIPp process of the run, its statistics file and its error log."""

    name: str
    proc: subprocess.Popen[bytes]
    cwd: Path

    def stats(self) -> dict[str, str]:
        """The last row of SIPp's -trace_stat file (cumulative counters)."""
        files = sorted(self.cwd.glob(f"{self.name}_*.csv"))
        if not files:
            return {}
        rows = list(csv.DictReader(files[-1].open(), delimiter=";"))
        return rows[-1] if rows else {}

    def errors(self) -> str:
        """SIPp's error log, summed up: each kind of error (its first words) and how often."""
        kinds: Counter[str] = Counter()
        for path in self.cwd.glob(f"{self.name}_*errors.log"):
            for line in path.read_text(errors="replace").splitlines():
                # "<date>\t<time>\t<epoch>: <message>": the message without its call id.
                head, _, message = line.partition(": ")
                if message and head.count("\t") == 2:
                    kinds[" ".join(w for w in message.split()[:6] if "@" not in w)] += 1
        return "; ".join(f"{n} x {kind}" for kind, n in kinds.most_common(8))


def sipp(
    cwd: Path, scenario: Path, target: str, name: str, *args: str, stats: bool = False
) -> Sipp:
    sipp_bin = shutil.which("sipp")
    if sipp_bin is None:
        raise SystemExit("sipp is not installed (Debian sip-tester; `make sysdeps` installs it)")
    # A copy named after its role, so the two SIPp's -trace_stat files are told apart.
    local = cwd / f"{name}.xml"
    shutil.copyfile(scenario, local)
    extra = ["-trace_stat", "-fd", "1"] if stats else []
    proc = subprocess.Popen(
        [
            sipp_bin,
            target,
            "-sf",
            str(local),
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-nostdin",
            "-trace_err",
            *extra,
            *args,
        ],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return Sipp(name, proc, cwd)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def add_account(env: dict[str, str], user: str, policy: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "callrec",
            "sip",
            "account",
            "add",
            user,
            "--password",
            PASSWORD,
            "--policy",
            policy,
        ],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def recordings(server: SpawnedServer) -> list[dict[str, Any]]:
    path = server.database_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT status, stop_reason, duration, channels, path, packets_received, "
            "packets_lost, packets_late, packets_duplicate, packets_foreign, packets_other, "
            "ssrc_changes, packets_kernel_dropped FROM recordings WHERE source = 'sip'"
        ).fetchall()
    return [dict(r) for r in rows]


def file_seconds(root: Path, rel: str) -> float | None:
    try:
        with wave.open(str(root / rel)) as wav:
            if wav.getnchannels() != 2:
                return None
            return wav.getnframes() / wav.getframerate()
    except (OSError, wave.Error, EOFError):
        return None


class SocketDrops:
    """Datagrams the kernel dropped on the server's UDP sockets (``/proc/net/udp``, by the
    inodes of the sockets its processes hold), the highest reading of each kept: a check
    beside the catalogue's counters that also covers the SIP socket and closed calls."""

    def __init__(self, root: int, sip_port: int) -> None:
        self.root = root
        self.sip_port = sip_port
        self.sip_inodes: set[str] = set()
        self.base = self.read()
        self.peak = dict(self.base)

    def read(self) -> dict[str, int]:
        inodes: set[str] = set()
        for pid in process_tree(self.root):
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        link = os.readlink(f"/proc/{pid}/fd/{fd}")
                        if link.startswith("socket:["):
                            inodes.add(link[8:-1])
        out = {}
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            with contextlib.suppress(OSError), open(table) as fh:
                for line in fh.readlines()[1:]:
                    parts = line.split()
                    if len(parts) >= 13 and parts[9] in inodes:
                        out[parts[9]] = int(parts[12])
                        if int(parts[1].rsplit(":", 1)[1], 16) == self.sip_port:
                            self.sip_inodes.add(parts[9])
        return out

    def sample(self) -> None:
        for inode, drops in self.read().items():
            self.peak[inode] = max(drops, self.peak.get(inode, 0))

    def total(self, *, sip: bool) -> int:
        """Drops on the SIP socket (``sip``), or on the media relay's sockets."""
        return sum(
            v - self.base.get(k, 0) for k, v in self.peak.items() if (k in self.sip_inodes) == sip
        )


def silent_frames(root: Path, rel: str) -> list[list[float]]:
    """Per channel, the offsets (s) of the 20 ms frames of digital silence between the
    channel's first and last sound: where packets were missing (the audio loop has sound in
    every frame). What tells a lossy recording's lost packets apart by side and time."""
    with wave.open(str(root / rel)) as wav:
        rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    step = rate // PACKETS_PER_SECOND
    out = []
    for channel in (0, 1):
        frames = pcm[: len(pcm) // step * step, channel].reshape(-1, step)
        sound = np.flatnonzero(frames.any(axis=1))
        if not sound.size:
            out.append([])
            continue
        quiet = np.flatnonzero(~frames[sound[0] : sound[-1]].any(axis=1)) + sound[0]
        out.append([round(float(i) / PACKETS_PER_SECOND, 2) for i in quiet])
    return out


def window(samples: list[Sample], start: float, end: float) -> tuple[Sample, Sample] | None:
    inside = [s for s in samples if start <= s.at <= end]
    return (inside[0], inside[-1]) if len(inside) >= 2 else None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="callrec-sipbench-"))
    sip_port = free_udp_port()
    env = {
        "CALLREC_SIP_ENABLED": "true",
        "CALLREC_SIP_HOST": "127.0.0.1",
        "CALLREC_SIP_PORT": str(sip_port),
        "CALLREC_SIP_TCP": "false",
        "CALLREC_SIP_ADVERTISED_ADDRESS": "127.0.0.1",
        # Every SIPp call comes from one address and one account: the per-source request
        # limit and the per-device recording limit would refuse a load test's calls.
        "CALLREC_SIP_MAX_REQUESTS_PER_SOURCE": "0",
        "CALLREC_MAX_SESSIONS_PER_DEVICE": str(args.calls + 10),
        "CALLREC_SIP_ACCOUNT_REFRESH": "1",
    }
    if args.media_ports:
        low, high = args.media_ports.split("-")
        env |= {"CALLREC_MEDIA_PORT_MIN": low, "CALLREC_MEDIA_PORT_MAX": high}
    media = work / "sipp"
    media.mkdir()
    audio = b"".join(AudioLoop.build(get_codec("PCMA")).payloads)
    (media / "caller.alaw").write_bytes(audio)
    (media / "callee.alaw").write_bytes(audio[::-1])
    target = f"127.0.0.1:{sip_port}"
    procs: list[Sipp] = []
    load_before = os.getloadavg()
    pressure = cpu_pressure()
    began = datetime.now(UTC)
    try:
        async with spawn_server(
            calls=args.calls,
            workdir=work / "server",
            server_args=args.server_args.split(),
            env=env,
        ) as server:
            cli_env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
            cli_env["CALLREC_DATABASE_URL"] = server.database_url
            cli_env["CALLREC_RECORDINGS_DIR"] = str(server.recordings_dir)
            add_account(cli_env, "alice", "always")
            add_account(cli_env, "bob", "on_demand")
            await asyncio.sleep(2.5)  # the server re-reads the accounts every second
            bob_port = str(free_udp_port())
            common = ["-timeout", "30s", "-timeout_error"]
            reg_args = ["-m", "1", "-key", "user", "bob", "-au", "bob", "-ap", PASSWORD]
            reg = sipp(
                media, SCENARIOS / "register.xml", target, "register", "-p", bob_port,
                *reg_args, *common,
            )  # fmt: skip
            procs.append(reg)
            if await asyncio.to_thread(reg.proc.wait, 40) != 0:
                raise RuntimeError(f"bob did not register: {reg.errors()}")
            call_ms = str(round(args.seconds * 1000))
            callee = sipp(
                media, SCENARIOS / "callee.xml", target, "callee", "-p", bob_port,
                "-key", "user", "bob", "-m", str(args.calls), "-mp", str(RTP_BASE[1]),
                stats=True,
            )  # fmt: skip
            procs.append(callee)
            await asyncio.sleep(1.0)
            meter = ProcessMeter.tree(server.pid)
            gen_meter = ProcessMeter(lambda: [p.proc.pid for p in procs if p.proc.poll() is None])
            drops = SocketDrops(server.pid, sip_port)
            before = meter.sample()
            gen_meter.sample()
            start = time.monotonic()
            caller = sipp(
                media, CALLER, target, "caller", "-s", "bob", "-key", "user", "alice",
                "-au", "alice", "-ap", PASSWORD, "-p", str(free_udp_port()),
                "-m", str(args.calls), "-l", str(args.calls), "-r", f"{args.rate:g}",
                "-d", call_ms, "-mp", str(RTP_BASE[0]),
                "-timeout", f"{round(args.seconds + args.calls / args.rate + 60)}s",
                "-timeout_error", stats=True,
            )  # fmt: skip
            procs.append(caller)
            while caller.proc.poll() is None:
                if (why := server.died()) is not None:
                    raise RuntimeError(why)
                meter.sample()
                gen_meter.sample()
                drops.sample()
                await asyncio.sleep(0.5)
            drops.sample()
            ended = time.monotonic()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(callee.proc.wait, 15)
            stop(callee.proc)
            # Recordings are finalised after the BYE: wait until every row is done.
            deadline = time.monotonic() + 30
            rows = recordings(server)
            while time.monotonic() < deadline and (
                len(rows) < args.calls or any(r["status"] == "recording" for r in rows)
            ):
                await asyncio.sleep(0.5)
                rows = recordings(server)
            seconds = [file_seconds(server.recordings_dir, r["path"]) for r in rows]
            for r in rows:
                if r["packets_lost"] or r["packets_late"]:
                    with contextlib.suppress(OSError, wave.Error, EOFError, ValueError):
                        r["silent_frames"] = silent_frames(server.recordings_dir, r["path"])
            # Steady: every call is up (the last INVITE is sent at calls / rate, 1 s to answer)
            # and none has ended yet (the first ends `seconds` after the start).
            steady_from = start + args.calls / args.rate + 1.0
            steady_to = start + args.seconds
            steady = window(meter.samples, steady_from, steady_to)
            steady_kind = "every call up"
            if steady is None:
                steady = (before, meter.samples[-1])
                steady_kind = "whole run (no steady window: calls too short for the ramp)"
            gen = window(gen_meter.samples, steady[0].at, steady[1].at)
            return summarise(
                args,
                rows=rows,
                file_seconds=seconds,
                caller=caller,
                callee=callee,
                before=before,
                samples=meter.samples,
                steady=steady,
                steady_kind=steady_kind,
                gen=gen,
                took=ended - start,
                socket_drops=drops.total(sip=False),
                sip_drops=drops.total(sip=True),
            ) | {
                "when": began.isoformat(timespec="seconds"),
                "command": " ".join(sys.argv),
                "machine": machine()
                | {"load_average_before": load_before, "pressure_before": pressure},
            }
    finally:
        for p in procs:
            stop(p.proc)
        if args.keep:
            print(f"kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def summarise(
    args: argparse.Namespace,
    *,
    rows: list[dict[str, Any]],
    file_seconds: list[float | None],
    caller: Sipp,
    callee: Sipp,
    before: Sample,
    samples: list[Sample],
    steady: tuple[Sample, Sample],
    steady_kind: str,
    gen: tuple[Sample, Sample] | None,
    took: float,
    socket_drops: int,
    sip_drops: int,
) -> dict[str, Any]:
    stats = caller.stats()
    ok = int(stats.get("SuccessfulCall(C)", 0) or 0)
    failed = int(stats.get("FailedCall(C)", 0) or 0)
    retrans = int(stats.get("Retransmissions(C)", 0) or 0)
    complete = [r for r in rows if r["status"] == "complete"]
    duration = sum(r["duration"] or 0.0 for r in rows)
    received = sum(r["packets_received"] for r in rows)
    # Both parties send 50 packets a second for as long as the recording lasts.
    expected = round(duration * 2 * PACKETS_PER_SECOND)
    lost = sum(r["packets_lost"] for r in rows)
    late = sum(r["packets_late"] for r in rows)
    dropped = sum(r["packets_kernel_dropped"] for r in rows)
    a, b = steady
    span = b.at - a.at
    cpu = (b.cpu - a.cpu) / span * 100 if span > 0 else None
    calls_up = args.calls
    packets_per_s = calls_up * 2 * PACKETS_PER_SECOND
    gen_cpu = (gen[1].cpu - gen[0].cpu) / span * 100 if gen else None
    peak = max(s.rss_kib for s in samples)
    bad_files = sum(1 for s in file_seconds if s is None)
    result = {
        "recorder": "callrec-sip",
        "codec": "PCMA",
        "calls": args.calls,
        "seconds": args.seconds,
        "rate": args.rate,
        "server_args": args.server_args,
        "media_ports": args.media_ports or "20000-32767",
        "sipp_rc": caller.proc.returncode,
        "sipp_calls_ok": ok,
        "sipp_calls_failed": failed,
        "sipp_retransmissions": retrans,
        "sipp_errors": caller.errors(),
        "callee_errors": callee.errors(),
        "callee_calls_ok": int(callee.stats().get("SuccessfulCall(C)", 0) or 0),
        "recordings": len(rows),
        "recordings_complete": len(complete),
        "stereo_files_ok": len(file_seconds) - bad_files,
        "recorded_seconds": round(duration, 1),
        "file_seconds": round(sum(s or 0.0 for s in file_seconds), 1),
        "packets_expected": expected,
        "packets_received": received,
        "received_percent_of_expected": round(received / expected * 100, 2) if expected else None,
        "packets_lost": lost,
        "packets_late": late,
        "packets_kernel_dropped": dropped,
        # Another stream on a call's port (a second SSRC): what a generator that sends one
        # call's RTP to another call's port would show, next to that call's loss.
        "packets_foreign": sum(r["packets_foreign"] for r in rows),
        "ssrc_changes": sum(r["ssrc_changes"] for r in rows),
        "server_socket_drops": socket_drops,
        "sip_socket_drops": sip_drops,
        "steady_window": steady_kind,
        "steady_seconds": round(span, 1),
        "cpu_percent": None if cpu is None else round(cpu, 1),
        "cpu_per_call_percent": None if cpu is None else round(cpu / calls_up, 4),
        "cpu_us_per_packet": None if cpu is None else round(cpu / 100 / packets_per_s * 1e6, 2),
        "sipp_cpu_percent": None if gen_cpu is None else round(gen_cpu, 1),
        "rss_before_kib": before.rss_kib,
        "rss_peak_kib": peak,
        "rss_per_call_kib": round((peak - before.rss_kib) / calls_up, 1),
        "took_seconds": round(took, 1),
        "lossy_recordings": [
            {
                k: r[k]
                for k in (
                    "path",
                    "duration",
                    "packets_received",
                    "packets_lost",
                    "packets_late",
                    "packets_foreign",
                    "ssrc_changes",
                    "silent_frames",
                )
                if k in r
            }
            for r in rows
            if r["packets_lost"] or r["packets_late"]
        ][:20],
    }
    problems = []
    if caller.proc.returncode != 0 or failed or ok < args.calls:
        problems.append(
            f"SIPp: {ok} calls ok, {failed} failed, exit {caller.proc.returncode}; caller's "
            f"errors: {result['sipp_errors'] or '-'}; callee's: {result['callee_errors'] or '-'}"
        )
    if len(complete) < args.calls:
        problems.append(f"{len(complete)} complete recordings of {args.calls} calls")
    if bad_files:
        problems.append(f"{bad_files} recordings without a readable stereo file")
    if lost or late or dropped or socket_drops:
        problems.append(
            f"loss: {lost} lost, {late} late, {dropped} dropped by the kernel "
            f"({socket_drops} on the relay's sockets in /proc/net/udp)"
        )
    result["problems"] = problems
    result["ok"] = not problems
    return result


def table(r: dict[str, Any]) -> str:
    la = r["machine"]["load_average_before"]
    lines = [
        f"SIP B2BUA: {r['calls']} calls x {r['seconds']:g} s PCMA "
        f"(load average before {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}; shared machine)",
        f"  SIPp calls ok / failed / retransmissions  {r['sipp_calls_ok']} / "
        f"{r['sipp_calls_failed']} / {r['sipp_retransmissions']}",
        f"  recordings complete / stereo files ok     {r['recordings_complete']} / "
        f"{r['stereo_files_ok']} of {r['calls']}",
        f"  packets received / expected by duration   {r['packets_received']:,} / "
        f"{r['packets_expected']:,} ({r['received_percent_of_expected']} %)",
        f"  lost / late / kernel drops                {r['packets_lost']} / "
        f"{r['packets_late']} / {r['packets_kernel_dropped']} "
        f"(/proc/net/udp: {r['server_socket_drops']})",
        f"  SIP socket drops (/proc/net/udp)          {r['sip_socket_drops']}",
        f"  foreign packets / SSRC changes            {r['packets_foreign']} / {r['ssrc_changes']}",
        f"  server CPU % of a core ({r['steady_seconds']} s, {r['steady_window']})  "
        f"{r['cpu_percent']}",
        f"  CPU per call %, us per packet received    {r['cpu_per_call_percent']}, "
        f"{r['cpu_us_per_packet']}",
        f"  SIPp (both sides) CPU %                   {r['sipp_cpu_percent']}",
        f"  RSS before / peak / per call KiB          {r['rss_before_kib']:,} / "
        f"{r['rss_peak_kib']:,} / {r['rss_per_call_kib']}",
        f"  result                                    {'OK' if r['ok'] else 'FAILED'}",
    ]
    lines += [f"  problem: {p}" for p in r["problems"]]
    return "\n".join(lines)


def summary(results: Path) -> str:
    head = (
        "| when (UTC) | calls x s | SIPp ok / failed | recordings | received % of expected "
        "| lost / late / drops | CPU % | CPU/call % | us/packet | RSS/call KiB | load avg |\n"
        + "|---" * 11
        + "|"
    )
    rows = [head]
    files = [json.loads(p.read_text()) for p in results.glob("sip-*.json")]
    for r in sorted(files, key=lambda d: str(d["when"])):
        la = r["machine"]["load_average_before"]
        rows.append(
            "| "
            + " | ".join(
                [
                    r["when"][5:16].replace("T", " "),
                    f"{r['calls']} x {r['seconds']:g}",
                    f"{r['sipp_calls_ok']} / {r['sipp_calls_failed']}",
                    f"{r['recordings_complete']}",
                    f"{r['received_percent_of_expected']}",
                    f"{r['packets_lost']} / {r['packets_late']} / {r['packets_kernel_dropped']}",
                    f"{r['cpu_percent']}",
                    f"{r['cpu_per_call_percent']}",
                    f"{r['cpu_us_per_packet']}",
                    f"{r['rss_per_call_kib']}",
                    f"{la[0]:.2f}",
                ]
            )
            + " |"
        )
    return "\n".join(rows)


def main() -> None:
    args = parser().parse_args()
    if args.summary:
        print(summary(args.out))
        return
    try:
        result = asyncio.run(run(args))
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(result, indent=2) if args.json else table(result))
    if not args.no_save:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = result["when"].replace("-", "").replace(":", "")[:15]
        name = f"sip-PCMA-{args.calls}x{args.seconds:g}s-{stamp}.json"
        (args.out / name).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {args.out / name}", file=sys.stderr)
    raise SystemExit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
