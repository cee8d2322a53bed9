"""What making each tick durable costs: N recordings' files flushed and synced every tick.

No sockets, no decoding: N ``WavWriter`` files (8 kHz mono, as a G.711 call) each get one
tick's audio in memory, then the tick's file work runs as the engine's media I/O thread runs
it (flush every file, then ``DiskSync.sync``), every ``--interval`` seconds, for ``--ticks``
ticks, with each sync mode in turn (alternating, ``--rounds`` times). Per mode and N:

* flush and sync wall-clock time per tick (median, p99, max): the media I/O thread's time,
  which a tick adds to the window a power cut can lose;
* CPU per file per tick: the thread's own (``thread_time``), and the whole machine's from
  ``/proc/stat`` over the run (the kernel's write-back threads do syncfs's writing; other
  work on the machine is counted too, so the "off" run is the baseline to subtract);
* bytes the disk was asked to write (``/proc/diskstats`` of the filesystem's device; other
  writers count too) against the audio's own bytes.

With ``off`` the kernel writes the pages back later (after 30 s): a final ``syncfs`` after the
run writes what is left, timed apart ("deferred"), so the disk bytes compare like with like.

    .venv/bin/python benchmarks/sync_cost.py --files 300,1000,3000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from callrec.engine.durability import MODES, DiskSync, syncfs
from callrec.media.wav import WavWriter

SAMPLE_RATE = 8000
BYTES_PER_SECOND = SAMPLE_RATE * 2


def busy_jiffies() -> int:
    """CPU time of the whole machine, in clock ticks, that was not idle or iowait."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]) - idle


def writeback_jiffies() -> int:
    """CPU time, in clock ticks, of the kernel threads that write pages back and commit the
    journal (``kworker/*``, ``jbd2/*``): where syncfs's work is done. Other writers' too."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        comm = text[text.index("(") + 1 : text.rindex(")")]
        if comm.startswith(("kworker", "jbd2")):
            fields = text[text.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def device_of(path: Path) -> str | None:
    """The /proc/diskstats name of the block device holding ``path`` (a partition's disk)."""
    dev = os.stat(path).st_dev
    name = f"{os.major(dev)}:{os.minor(dev)}"
    sys_dev = Path(f"/sys/dev/block/{name}")
    if not sys_dev.exists():
        return None
    return sys_dev.resolve().name


def sectors_written(device: str | None) -> int:
    if device is None:
        return 0
    with open("/proc/diskstats") as stats:
        for line in stats:
            fields = line.split()
            if fields[2] == device:
                return int(fields[9])
    return 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_one(base: Path, mode: str, files: int, ticks: int, interval: float) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix=f"sync-{mode}-", dir=base))
    writers = [WavWriter(directory / f"{i:05d}.wav", sample_rate=SAMPLE_RATE) for i in range(files)]
    disk = DiskSync(directory, mode, interval=interval)
    size = int(BYTES_PER_SECOND * interval)
    pcm = os.urandom(size - size % 2)
    device = device_of(directory)
    flush_s: list[float] = []
    sync_s: list[float] = []
    thread_cpu = 0.0
    # Start from a clean page cache for these files (their headers).
    fd = os.open(directory, os.O_RDONLY)
    syncfs(fd)
    jiffies, sectors, kernel = busy_jiffies(), sectors_written(device), writeback_jiffies()
    began = time.monotonic()
    next_tick = began
    for _ in range(ticks):
        next_tick += interval
        time.sleep(max(0.0, next_tick - time.monotonic()))
        for writer in writers:
            writer.write(pcm)
        cpu0, t0 = time.thread_time(), time.perf_counter()
        for writer in writers:
            writer.flush()
        t1 = time.perf_counter()
        disk.sync(writers)  # nothing in "off" mode
        t2 = time.perf_counter()
        thread_cpu += time.thread_time() - cpu0
        flush_s.append(t1 - t0)
        sync_s.append(t2 - t1)
    elapsed = time.monotonic() - began
    t3 = time.perf_counter()
    syncfs(fd)  # what "off" left for the kernel to write later (nearly nothing otherwise)
    deferred = time.perf_counter() - t3
    os.close(fd)
    jiffies = busy_jiffies() - jiffies
    kernel = writeback_jiffies() - kernel
    written = (sectors_written(device) - sectors) * 512
    for writer in writers:
        writer.abort()
    shutil.rmtree(directory)
    file_ticks = files * ticks
    audio = len(pcm) * file_ticks
    return {
        "mode": disk.mode,
        "files": files,
        "ticks": ticks,
        "interval": interval,
        "flush_ms_median": statistics.median(flush_s) * 1e3,
        "flush_ms_max": max(flush_s) * 1e3,
        "sync_ms_median": statistics.median(sync_s) * 1e3,
        "sync_ms_p99": percentile(sync_s, 0.99) * 1e3,
        "sync_ms_max": max(sync_s) * 1e3,
        "deferred_sync_ms": deferred * 1e3,
        "thread_cpu_us_per_file_tick": thread_cpu / file_ticks * 1e6,
        "writeback_cpu_us_per_file_tick": kernel / os.sysconf("SC_CLK_TCK") / file_ticks * 1e6,
        "machine_cpu_us_per_file_tick": jiffies / os.sysconf("SC_CLK_TCK") / file_ticks * 1e6,
        "machine_cpu_percent": jiffies / os.sysconf("SC_CLK_TCK") / elapsed * 100,
        "audio_mb": audio / 1e6,
        "disk_written_mb": written / 1e6,
        "disk_over_audio": written / audio if audio else None,
        "failures": disk.failures,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", default="300,1000,3000", help="comma-separated file counts")
    p.add_argument("--interval", type=float, default=0.5, help="seconds per tick")
    p.add_argument("--ticks", type=int, default=20)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--rounds", type=int, default=3, help="each mode this often, alternating")
    p.add_argument("--dir", type=Path, default=None, help="where the files go (its filesystem)")
    p.add_argument("--json", type=Path, default=None, help="also write every run here")
    args = p.parse_args()
    base = args.dir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    counts = [int(n) for n in args.files.split(",")]
    modes = args.modes.split(",")
    runs: list[dict[str, Any]] = []
    print(
        "| round | files | mode | flush ms/tick p50 / max | sync ms/tick p50 / p99 / max "
        "| deferred ms | thread CPU us/file-tick | write-back threads CPU us/file-tick "
        "| machine CPU us/file-tick (%) | disk MB (x audio) |"
    )
    print("|---" * 10 + "|")
    for files in counts:
        for rnd in range(args.rounds):
            order = modes if rnd % 2 == 0 else modes[::-1]
            for mode in order:
                r = run_one(base, mode, files, args.ticks, args.interval)
                r["round"] = rnd + 1
                runs.append(r)
                print(
                    f"| {rnd + 1} | {files:,} | {r['mode']} "
                    f"| {r['flush_ms_median']:.1f} / {r['flush_ms_max']:.1f} "
                    f"| {r['sync_ms_median']:.1f} / {r['sync_ms_p99']:.1f} / "
                    f"{r['sync_ms_max']:.1f} | {r['deferred_sync_ms']:.0f} "
                    f"| {r['thread_cpu_us_per_file_tick']:.1f} "
                    f"| {r['writeback_cpu_us_per_file_tick']:.1f} "
                    f"| {r['machine_cpu_us_per_file_tick']:.1f} "
                    f"({r['machine_cpu_percent']:.0f} %) "
                    f"| {r['disk_written_mb']:.0f} ({r['disk_over_audio']:.2f}) |",
                    flush=True,
                )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main()
