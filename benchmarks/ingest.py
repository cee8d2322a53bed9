"""Ingest benchmark: N phones recording at once against a `callrec serve` of its own.

Prints the loadtest table (calls, loss, CPU, RSS per call, stop -> answered and stop -> row
in the catalogue, verified files) and writes the figures as JSON under --out. With --peer, the
same load is then recorded by each peer: one GStreamer pipeline per call
(benchmarks/peer_gstreamer.py) and one rtpengine writing a pcap per call
(benchmarks/peer_rtpengine.py); ``--peers gstreamer`` picks some. All are printed side by
side with each peer's CPU-per-call ratio to callrec. Headline runs (issue 5):

    .venv/bin/python benchmarks/ingest.py --calls 3000 --seconds 60 --peer --peer-calls 200
    .venv/bin/python benchmarks/ingest.py --codec G722 --calls 1000 --seconds 60
    .venv/bin/python benchmarks/ingest.py --plot-only          # docs/performance-cpu.png

The cost of power-cut durability: the same load with each ``--sync-mode`` (the server's
``sync_mode``), alternating, its results apart from the headline ones:

    .venv/bin/python benchmarks/ingest.py --calls 1000 --seconds 20 \
        --server-args "--workers 2" --sync-mode off --out benchmarks/results/sync
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import re
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from callrec.cli.loadtest import print_problems, progress_view, report_table
from callrec.config import SYNC_MODES
from callrec.exceptions import CallrecError
from callrec.sim.loadrun import LoadOptions
from callrec.sim.loadtest import run_loadtest
from callrec.sim.report import LATE_TICK_MS, LoadReport
from callrec.sim.senders import run_async

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PLOT = ROOT / "docs" / "performance-cpu.png"


#: The peers, in the order they run: the module benchmarks/peer_NAME.py records the load.
PEERS = ("gstreamer", "rtpengine")
#: How each peer's CPU per call is compared with callrec's, for the printed ratio.
PEER_WHAT = {
    "gstreamer": "one gst-launch-1.0 pipeline per call",
    "rtpengine": "one userspace rtpengine writing pcap, no WAV",
}


def peer_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer {unknown[0]!r}: {', '.join(PEERS)}")
    return names


def parser(peers: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--codec", default="PCMA")
    p.add_argument("--ramp", type=float, default=100.0, help="calls started per second")
    p.add_argument("--verify", type=int, default=10, help="recordings checked per recorder")
    p.add_argument("--max-loss", type=float, default=0.0, help="percent")
    p.add_argument("--senders", type=int, default=0, help="sender processes (0: auto)")
    p.add_argument("--server-args", default="", help="extra `callrec serve` arguments")
    p.add_argument(
        "--sync-mode",
        choices=SYNC_MODES,
        default=None,
        help="the server's sync_mode (default: its own)",
    )
    p.add_argument(
        "--peers",
        type=peer_list,
        default=peers,
        help=f"also record with these peers, comma-separated ({','.join(PEERS)})",
    )
    p.add_argument("--peer", action="store_true", help="also record with every peer")
    p.add_argument("--peer-calls", type=int, default=0, help="peer size (default: --calls)")
    p.add_argument("--peer-only", action="store_true", help="run only the peers")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON results")
    p.add_argument("--no-save", action="store_true", help="write no JSON file")
    p.add_argument("--plot", action="store_true", help=f"then redraw {PLOT.name} from --out")
    p.add_argument("--plot-only", action="store_true", help="only redraw the plot")
    p.add_argument(
        "--summary", action="store_true", help="print every result under --out as Markdown"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no live progress")
    return p


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        # Share of time some task waited for a CPU (PSI, last 10 s and 60 s): how noisy.
        "cpu_pressure": cpu_pressure(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }


def cpu_pressure() -> dict[str, float]:
    try:
        with open("/proc/pressure/cpu") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return {}
    return {k: float(v) for k, v in (f.split("=") for f in fields) if k in ("avg10", "avg60")}


def run(args: argparse.Namespace, peers: tuple[str, ...]) -> int:
    # Not a terminal (make, CI, a pipe): wide enough that the table is not wrapped.
    err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)
    out = Console(width=None if sys.stdout.isatty() else 140)
    options = LoadOptions(
        calls=args.calls,
        seconds=args.seconds,
        ramp=args.ramp,
        codec=args.codec,
        verify=args.verify,
        max_loss=args.max_loss,
        senders=args.senders,
    )
    reports: list[LoadReport] = []
    began = datetime.now(UTC)
    load_before = os.getloadavg()
    pressure = cpu_pressure()
    if not args.peer_only:
        err.print(f"callrec: {args.calls} calls x {args.seconds:g} s {options.codec}")
        with progress_view(err, quiet=args.quiet) as show:
            reports.append(
                run_loadtest(
                    options,
                    spawn=True,
                    server_args=shlex.split(args.server_args),
                    server_env={"CALLREC_SYNC_MODE": args.sync_mode} if args.sync_mode else None,
                    progress=show,
                )
            )
    peer_options = options
    if args.peer_calls:
        peer_options = dataclasses.replace(options, calls=args.peer_calls)
    for name in peers:
        module = importlib.import_module(f"peer_{name}")
        err.print(f"{name}: {peer_options.calls} calls x {args.seconds:g} s {options.codec}")
        with progress_view(err, quiet=args.quiet) as show:
            reports.append(run_async(module.run_peer(peer_options, progress=show)))
    ratios = {name: cpu_ratio(reports, name) for name in peers}
    result = {
        "when": began.isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": machine() | {"load_average_before": load_before, "pressure_before": pressure},
        "sync_mode": args.sync_mode,
        "reports": [r.as_dict() for r in reports],
        **{f"{name}_over_callrec_cpu_per_call": ratio for name, ratio in ratios.items()},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        out.print(report_table(reports))
        for name, ratio in ratios.items():
            if ratio is not None:
                out.print(
                    f"CPU per call: {name} / callrec = [bold]{ratio:.1f}x[/bold] "
                    f"({PEER_WHAT[name]} vs one callrec server)"
                )
    print_problems(err, reports)
    if not args.no_save:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = began.strftime("%Y%m%dT%H%M%S")
        mode = f"-sync-{args.sync_mode}" if args.sync_mode else ""
        name = f"ingest-{options.codec}-{args.calls}x{args.seconds:g}s{mode}-{stamp}.json"
        (args.out / name).write_text(json.dumps(result, indent=2) + "\n")
        err.print(f"results: {args.out / name}")
    if args.plot:
        plot(args.out, PLOT)
    return 0 if all(r.ok for r in reports) else 1


def cpu_ratio(reports: list[LoadReport], name: str) -> float | None:
    by = {r.recorder: r.cpu_per_call_percent for r in reports}
    ours, peer = by.get("callrec"), by.get(name)
    if not ours or peer is None:
        return None
    return peer / ours


def plot(results: Path, png: Path) -> None:
    """CPU (percent of one core) against concurrent calls, callrec and its peers, from every
    result file; loss marked. Needs matplotlib (``pip install -e '.[bench]'``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points: dict[tuple[str, str], list[tuple[int, float, bool]]] = {}
    # The current server's runs, and (dashed) the baseline's kept under baseline/.
    files = [(p, False) for p in sorted(results.glob("ingest-*.json"))]
    files += [(p, True) for p in sorted((results / "baseline").glob("ingest-*.json"))]
    for path, baseline in files:
        data = json.loads(path.read_text())
        for r in data["reports"]:
            if r["cpu_percent"] is None or not r["calls_ok"]:
                continue
            # Failed calls or loss, or a generator that could not keep real time.
            flagged = (
                bool(r["loss_percent"])
                or r["calls_ok"] < r["calls"]
                or r["tick_lag_ms_p99"] > LATE_TICK_MS
            )
            if baseline and r["recorder"] != "callrec":
                continue  # the peers are the same programs: their current runs are enough
            key = (_recorder_name(r["recorder"], data.get("command", ""), baseline), r["codec"])
            points.setdefault(key, []).append((r["calls_ok"], r["cpu_percent"], flagged))
    fig, ax = plt.subplots(figsize=(8, 5))
    for (recorder, codec), values in sorted(points.items()):
        values.sort()
        xs = [v[0] for v in values]
        ys = [v[1] for v in values]
        style = "--" if "baseline" in recorder else "-"
        ax.plot(xs, ys, style, marker="o", label=f"{recorder} {codec}")
        bad = [(x, y) for x, y, lossy in values if lossy]
        if bad:
            ax.scatter(*zip(*bad, strict=True), s=120, facecolors="none", edgecolors="red")
    ax.axhline(200, color="grey", linestyle=":", label="2 cores")
    ax.set_xlabel("concurrent calls")
    ax.set_ylabel("recorder CPU, % of one core")
    ax.set_title(
        "CPU against concurrent calls (red circle: loss, failed calls or a late generator)"
    )
    ax.grid(True, alpha=0.3)
    ax.legend()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"plot: {png}", file=sys.stderr)


def summary(results: Path) -> str:
    """One Markdown row per recorder per result file, oldest first (docs/performance.md)."""
    head = (
        "| when (UTC) | recorder | codec | calls ok / asked | s | loss % | server CPU % "
        "| CPU/call % | us/packet | RSS/call KiB | start p99 ms | stop -> answer p50 / p99 ms "
        "| stop -> row p50 / p99 ms | verified (failed) | tick lag p99 ms | PSI avg10 |\n"
        + "|---" * 16
        + "|"
    )
    rows = [head]
    files = [json.loads(path.read_text()) for path in results.glob("ingest-*.json")]
    for data in sorted(files, key=lambda d: str(d["when"])):
        psi = data["machine"].get("pressure_before", {}).get("avg10")
        for r in data["reports"]:
            cells = [
                data["when"][5:16].replace("T", " "),
                _recorder_name(r["recorder"], data.get("command", ""))
                + (
                    f", sync {data['sync_mode']}"
                    if data.get("sync_mode") and r["recorder"] == "callrec"
                    else ""
                ),
                r["codec"],
                f"{r['calls_ok']:,} / {r['calls']:,}",
                f"{r['seconds']:g}",
                _fmt(r["loss_percent"], "{:.2f}"),
                _fmt(r["cpu_percent"], "{:.0f}"),
                _fmt(r["cpu_per_call_percent"], "{:.3f}"),
                _fmt(r["cpu_us_per_packet"], "{:.0f}"),
                _fmt(r["rss_per_call_kib"], "{:,.0f}"),
                _fmt(r["start_ms_p99"], "{:,.0f}"),
                f"{_fmt(r['stop_ms_median'], '{:,.0f}')} / {_fmt(r['stop_ms_p99'], '{:,.0f}')}",
                f"{_fmt(r.get('stop_row_ms_median'), '{:,.0f}')} / "
                f"{_fmt(r.get('stop_row_ms_p99'), '{:,.0f}')}",
                f"{r['verified']} ({r['verify_failed']})",
                f"{r['tick_lag_ms_p99']:,.0f}",
                _fmt(psi, "{:.0f}%"),
            ]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _recorder_name(recorder: str, command: str, baseline: bool = False) -> str:
    """``callrec, 2 proc.`` for a run with ``--workers 2``; a peer by its name, rtpengine
    saying what it writes."""
    if recorder == "rtpengine":
        return "rtpengine (pcap, no WAV)"
    if recorder != "callrec":
        return recorder
    if baseline:
        return "callrec (baseline)"
    workers = re.search(r"--workers[ =](\d+)", command)
    return f"callrec, {workers[1] if workers else 1} proc."


def _fmt(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def main(peers: tuple[str, ...] = ()) -> None:
    """``peers``: those run by default (peer_gstreamer.py and peer_rtpengine.py name theirs)."""
    args = parser(peers).parse_args()
    if args.summary:
        print(summary(args.out))
        return
    if args.plot_only:
        plot(args.out, PLOT)
        return
    started = time.monotonic()
    try:
        chosen = PEERS if args.peer else args.peers
        if args.peer_only and not chosen:
            chosen = PEERS
        code = run(args, chosen)
    except (CallrecError, OSError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        code = 1
    print(f"took {time.monotonic() - started:.0f} s", file=sys.stderr)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
