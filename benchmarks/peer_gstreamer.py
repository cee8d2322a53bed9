"""The peer: the same load recorded by one ``gst-launch-1.0`` pipeline per call.

Each call gets ``udpsrc ! rtpjitterbuffer ! depayloader ! decoder ! wavenc ! filesink`` in a
process of its own (``-e``: SIGINT at the end becomes EOS, so every WAV header is final), fed
by the same load generator as callrec (RTP only: no control connection), measured the same
way (CPU and RSS of all the gst processes from /proc), and its files verified against the
sent audio the same way. Run by itself it runs callrec first with the same calls, seconds
and codec, then the peer, and prints both and the CPU-per-call ratio:

    .venv/bin/python benchmarks/peer_gstreamer.py --calls 200 --seconds 30 [--codec G722]

Needs Debian's gstreamer1.0-tools, gstreamer1.0-plugins-good and (G.722) gstreamer1.0-libav:
``make bench-deps``.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import tempfile
import wave
from collections.abc import Callable
from pathlib import Path

from peer_common import bound, free_udp_ports, pss_kib, settle

from callrec.codecs import get_codec
from callrec.sim.audioloop import AudioLoop
from callrec.sim.loadrun import LoadError, LoadOptions, MediaTarget, Progress
from callrec.sim.loadtest import raise_descriptor_limit
from callrec.sim.meters import ProcessMeter
from callrec.sim.report import (
    FileCheck,
    LoadReport,
    RecorderTotals,
    make_report,
    sample_indices,
    verify_recording,
)
from callrec.sim.senders import run_load
from callrec.sim.spawn import die_with_parent

GST_LAUNCH = "gst-launch-1.0"
#: Depayloader and decoder per codec (G.722 through FFmpeg's decoder, from gstreamer1.0-libav).
ELEMENTS = {
    "PCMA": ["rtppcmadepay", "!", "alawdec"],
    "PCMU": ["rtppcmudepay", "!", "mulawdec"],
    "G722": ["rtpg722depay", "!", "avdec_g722"],
}
#: G.722's RTP clock is 8 kHz like G.711's (RFC 3551), whatever its sample rate.
CAPS = "application/x-rtp,media=audio,clock-rate=8000,encoding-name={name},payload={pt}"
#: Pipelines started at once; then we wait for their sockets before starting more.
START_BATCH = 50
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


def pipeline(codec: str, port: int, location: Path) -> list[str]:
    c = get_codec(codec)
    return [
        GST_LAUNCH,
        "-e",
        "-q",
        "udpsrc",
        f"port={port}",
        "address=127.0.0.1",
        f"caps={CAPS.format(name=c.name, pt=c.payload_type)}",
        "!",
        "rtpjitterbuffer",
        "!",
        *ELEMENTS[c.name],
        "!",
        "wavenc",
        "!",
        "filesink",
        f"location={location}",
    ]


async def _start_pipelines(
    codec: str, ports: list[int], files: list[Path], log: Path
) -> list[subprocess.Popen[bytes]]:
    procs: list[subprocess.Popen[bytes]] = []
    loop = asyncio.get_running_loop()
    with open(log, "ab") as log_fh:
        for first in range(0, len(ports), START_BATCH):
            batch = range(first, min(first + START_BATCH, len(ports)))
            for i in batch:
                procs.append(
                    subprocess.Popen(
                        pipeline(codec, ports[i], files[i]),
                        stdin=subprocess.DEVNULL,
                        stdout=log_fh,
                        stderr=log_fh,
                        preexec_fn=die_with_parent,
                    )
                )
            want = {ports[i] for i in batch}
            deadline = loop.time() + START_TIMEOUT
            while True:
                opened = {p for p in want if bound(p)}
                if opened == want:
                    break
                dead = [p for p in procs if p.poll() is not None]
                if dead:
                    raise LoadError(f"a gst-launch-1.0 exited with {dead[0].returncode}; see {log}")
                if loop.time() > deadline:
                    raise LoadError(f"{len(want - opened)} pipelines did not open their port")
                await asyncio.sleep(0.1)
    return procs


async def _stop_pipelines(procs: list[subprocess.Popen[bytes]]) -> list[int | None]:
    """SIGINT: ``-e`` turns it into EOS, wavenc writes the final header, the process exits."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STOP_TIMEOUT
    while any(p.poll() is None for p in procs) and loop.time() < deadline:
        await asyncio.sleep(0.1)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return [p.returncode for p in procs]


async def run_peer(
    options: LoadOptions,
    *,
    workdir: Path | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> LoadReport:
    """Record ``options``' load with one gst-launch-1.0 per call; the same report as callrec's."""
    if shutil.which(GST_LAUNCH) is None:
        raise LoadError(f"{GST_LAUNCH} is not installed: make bench-deps")
    raise_descriptor_limit(2 * options.calls + 200)
    audio = AudioLoop.for_options(options)
    owned = workdir is None
    root = Path(tempfile.mkdtemp(prefix="callrec-peer-")) if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    files = [root / f"call{i:05d}.wav" for i in range(options.calls)]
    ports = free_udp_ports(options.calls)
    procs: list[subprocess.Popen[bytes]] = []
    notes: list[str] = []
    try:
        procs = await _start_pipelines(options.codec, ports, files, root / "gst.log")
        pids = [p.pid for p in procs]
        await settle(ProcessMeter.of(pids))
        target = MediaTarget(
            host="127.0.0.1", ports=ports, meter=ProcessMeter.of(pids), name="gstreamer"
        )
        run = await run_load(options, target, audio=audio, progress=progress)
        pss = pss_kib(pids)
        notes.append(
            f"each call is a process: RSS per call is the whole process "
            f"(PSS, shared pages counted once: {pss / len(pids):,.0f} KiB per call)"
        )
    finally:
        codes = await _stop_pipelines(procs)
    problems = []
    failed = [c for c in codes if c != 0]
    if failed:
        problems.append(
            f"{len(failed)} gst-launch-1.0 processes exited with an error: {failed[:5]}"
        )
    frames = audio.frame_samples
    received = finalised = 0
    for path in files:
        try:
            with wave.open(str(path), "rb") as wav:
                got = wav.getnframes() // frames
        except (OSError, wave.Error, EOFError):
            continue
        received += got
        finalised += 1
    sent = sum(c.packets_sent for c in run.calls)
    totals = RecorderTotals(
        received=received, recorded=received, lost=sent - received, late=0, finalised=finalised
    )
    checks: list[FileCheck] = [
        verify_recording(
            files[i],
            audio,
            run.calls[i].packets_sent,
            audio_offset=run.calls[i].audio_offset,
            call=i,
        )
        for i in sample_indices([c.index for c in run.calls if c.ok], options.verify)
    ]
    report = make_report("gstreamer", run, totals, checks, problems)
    # A pipeline per call: its whole memory is the call's, not the growth over an idle start.
    if report.rss_peak_kib is not None:
        report.rss_before_kib = 0
        report.rss_per_call_kib = report.rss_peak_kib / options.calls
    report.notes += notes
    if owned:
        shutil.rmtree(root, ignore_errors=True)
    return report


def main() -> None:
    import ingest

    ingest.main(peers=("gstreamer",))


if __name__ == "__main__":
    main()
