"""USB import rate: `callrec file import` of N phone-local recordings into a catalogue of its own.

Writes N files as a phone's local recording writes them (docs/local-files.md: the vendor
header, then whole RTP packets of 20 ms; PCMA, PCMU and G.722 in turn, each --min-minutes to
--max-minutes long, `Record_<SystemTime>.wav` names), runs `callrec file import DIR --json`
once on them with a temporary SQLite catalogue and recordings directory, and reports files
per second, audio seconds per CPU second (the import process, from its rusage), its peak
RSS, and the catalogue's usb rows: one per file, `complete`, with the file's duration. Exit
status 1 when the import fails, a row is missing or a duration is wrong.

    .venv/bin/python benchmarks/import_rate.py --files 60
    .venv/bin/python benchmarks/import_rate.py --summary
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ingest import cpu_pressure, machine

from callrec.codecs import get_codec
from callrec.media.localfile import LocalFileWriter
from callrec.sim.audioloop import AudioLoop

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "import"
CODECS = ("PCMA", "PCMU", "G722")
#: 20 ms of each codec is 160 ticks of the 8 kHz RTP clock (G.722 too, RFC 3551).
INCREMENT = 160
PACKETS_PER_SECOND = 50


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=30)
    p.add_argument("--min-minutes", type=float, default=1.0)
    p.add_argument("--max-minutes", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--codecs", default=",".join(CODECS), help="in turn, e.g. G722 alone")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON results")
    p.add_argument("--no-save", action="store_true", help="write no JSON file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--summary", action="store_true", help="every saved result as Markdown")
    return p


def write_files(folder: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The phone's drive: N files, each a distinct stream (SSRC, first sequence number)."""
    rng = random.Random(args.seed)
    codecs = args.codecs.split(",")
    loops = {name: AudioLoop.build(get_codec(name)).payloads for name in codecs}
    start = datetime(2026, 11, 26, 9, 0, 0)
    made = []
    for i in range(args.files):
        name = codecs[i % len(codecs)]
        codec = get_codec(name)
        packets = round(rng.uniform(args.min_minutes, args.max_minutes) * 60 * PACKETS_PER_SECOND)
        ssrc, seq, ts = rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32)
        payloads = loops[name]
        first = struct.pack("!BBHII", 0x80, 0x80 | codec.payload_type, seq, ts, ssrc)
        units = [first + payloads[0]]
        pt = codec.payload_type
        for k in range(1, packets):
            header = struct.pack(
                "!BBHII", 0x80, pt, (seq + k) & 0xFFFF, (ts + k * INCREMENT) & 0xFFFFFFFF, ssrc
            )
            units.append(header + payloads[k % len(payloads)])
        writer = LocalFileWriter(codec=name, unit_size=len(units[0]), increment=INCREMENT)
        start += timedelta(minutes=7)
        path = folder / f"Record_{start:%Y%m%d%H%M%S}.wav"
        body = b"".join(writer.unit(u) for u in units)
        path.write_bytes(writer.header() + body)  # the header announces the units written
        made.append({"name": path.name, "codec": name, "seconds": packets / PACKETS_PER_SECOND})
    return made


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="callrec-importbench-"))
    try:
        drive = work / "usb"
        drive.mkdir()
        made_at = time.monotonic()
        files = write_files(drive, args)
        made_s = time.monotonic() - made_at
        size = sum(p.stat().st_size for p in drive.iterdir())
        db = work / "catalog.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
        env |= {
            "CALLREC_DATABASE_URL": f"sqlite:///{db}",
            "CALLREC_RECORDINGS_DIR": str(work / "recordings"),
        }
        load_before = os.getloadavg()
        pressure = cpu_pressure()
        began = datetime.now(UTC)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "callrec", "file", "import", str(drive), "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=max(120.0, args.files * 20.0),
        )
        wall = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
        with contextlib.closing(sqlite3.connect(db)) as con:
            rows = con.execute(
                "SELECT original_path, status, duration, codec, path FROM recordings "
                "WHERE source = 'usb'"
            ).fetchall()
        recordings = work / "recordings"
        by_name = {Path(r[0] or "").stem: r for r in rows}
        problems = []
        if proc.returncode != 0:
            problems.append(f"import exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        wrong = []
        for f in files:
            row = by_name.get(Path(f["name"]).stem)
            if row is None:
                wrong.append(f"{f['name']}: no row")
            elif row[1] != "complete" or abs((row[2] or 0) - f["seconds"]) > 0.021:
                wrong.append(f"{f['name']}: {row[1]}, {row[2]} s (wrote {f['seconds']} s)")
            elif not (recordings / row[4]).is_file():
                wrong.append(f"{f['name']}: no WAV at {row[4]}")
        if wrong:
            problems.append(f"{len(wrong)} files not catalogued right: {wrong[:5]}")
        audio = sum(f["seconds"] for f in files)
        return {
            "when": began.isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
            "machine": machine()
            | {"load_average_before": load_before, "pressure_before": pressure},
            "files": args.files,
            "codecs": {c: n for c in CODECS if (n := sum(1 for f in files if f["codec"] == c))},
            "audio_seconds": round(audio, 1),
            "input_bytes": size,
            "generate_seconds": round(made_s, 1),
            "import_wall_seconds": round(wall, 2),
            "import_cpu_seconds": round(cpu, 2),
            "import_peak_rss_kib": after.ru_maxrss,
            "files_per_second": round(args.files / wall, 2),
            "audio_seconds_per_cpu_second": round(audio / cpu, 1) if cpu else None,
            "audio_seconds_per_wall_second": round(audio / wall, 1),
            "catalogue_rows": len(rows),
            "rows_complete": sum(1 for r in rows if r[1] == "complete"),
            "problems": problems,
            "ok": not problems,
        }
    finally:
        if args.keep:
            print(f"kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def table(r: dict[str, Any]) -> str:
    la = r["machine"]["load_average_before"]
    lines = [
        f"USB import: {r['files']} files {r['codecs']}, {r['audio_seconds'] / 60:.0f} min of "
        f"audio, {r['input_bytes'] / 1e6:.0f} MB (load average before {la[0]:.2f} {la[1]:.2f} "
        f"{la[2]:.2f}; shared machine)",
        f"  import wall / CPU s              {r['import_wall_seconds']} / "
        f"{r['import_cpu_seconds']}",
        f"  files per second                 {r['files_per_second']}",
        f"  audio s per CPU s / per wall s   {r['audio_seconds_per_cpu_second']} / "
        f"{r['audio_seconds_per_wall_second']}",
        f"  peak RSS KiB                     {r['import_peak_rss_kib']:,}",
        f"  catalogue rows (complete)        {r['catalogue_rows']} ({r['rows_complete']})",
        f"  result                           {'OK' if r['ok'] else 'FAILED'}",
    ]
    lines += [f"  problem: {p}" for p in r["problems"]]
    return "\n".join(lines)


def summary(results: Path) -> str:
    head = (
        "| when (UTC) | codecs | files | audio min | wall s | CPU s | files/s | audio s per CPU s "
        "| peak RSS MiB | rows | load avg |\n" + "|---" * 11 + "|"
    )
    out = [head]
    files = [json.loads(p.read_text()) for p in results.glob("import-*.json")]
    for r in sorted(files, key=lambda d: str(d["when"])):
        la = r["machine"]["load_average_before"]
        cells = [
            r["when"][5:16].replace("T", " "),
            ", ".join(r["codecs"]),
            str(r["files"]),
            f"{r['audio_seconds'] / 60:.0f}",
            str(r["import_wall_seconds"]),
            str(r["import_cpu_seconds"]),
            str(r["files_per_second"]),
            str(r["audio_seconds_per_cpu_second"]),
            f"{r['import_peak_rss_kib'] / 1024:.0f}",
            f"{r['rows_complete']} / {r['files']}",
            f"{la[0]:.2f}",
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    args = parser().parse_args()
    if args.summary:
        print(summary(args.out))
        return
    try:
        result = run(args)
    except (OSError, subprocess.SubprocessError, sqlite3.Error) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(result, indent=2) if args.json else table(result))
    if not args.no_save:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = result["when"].replace("-", "").replace(":", "")[:15]
        codecs = "-".join(result["codecs"])
        name = f"import-{codecs}-{args.files}files-{stamp}.json"
        (args.out / name).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {args.out / name}", file=sys.stderr)
    raise SystemExit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
