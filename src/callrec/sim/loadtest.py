"""Where a load test starts: many simulated phones against a recorder, then the verdict.

Entry points: :func:`run_loadtest` (synchronous, uvloop; ``callrec loadtest`` and
``benchmarks/ingest.py``) loads a running server or one it spawns, :func:`load_callrec`
(async) any running callrec server (the tests). For RTP only, to given UDP ports (the
GStreamer peer of ``benchmarks/peer_gstreamer.py``), :func:`callrec.sim.senders.run_load`
with a :class:`~callrec.sim.loadrun.MediaTarget`. Linux only: the figures come from
``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from callrec.exceptions import CallrecError
from callrec.sim.audioloop import AudioLoop
from callrec.sim.loadrun import LoadError, LoadOptions, Progress, ServerTarget
from callrec.sim.meters import ProcessMeter, listener_pid
from callrec.sim.report import (
    FileCheck,
    LoadReport,
    RecorderTotals,
    catalogue_totals,
    make_report,
    verify_catalogued,
)
from callrec.sim.senders import run_async, run_load
from callrec.sim.spawn import spawn_server


def raise_descriptor_limit(needed: int) -> None:
    """Ask for every descriptor we may have; fail early when ``needed`` is out of reach."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed and (hard == resource.RLIM_INFINITY or hard > soft):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise LoadError(f"{needed} file descriptors needed, the limit is {soft} (ulimit -n)")


async def load_callrec(
    options: LoadOptions,
    target: ServerTarget,
    *,
    progress: Callable[[Progress], None] | None = None,
) -> LoadReport:
    """Load a running callrec server, then read its catalogue and verify its files."""
    audio = AudioLoop.for_options(options)
    run = await run_load(options, target, audio=audio, progress=progress)
    problems: list[str] = []
    totals: RecorderTotals | None = None
    checks: list[FileCheck] = []
    if target.database_url is None:
        problems.append("no catalogue URL: the recorder's counters cannot be read")
    else:
        try:
            totals, rows, found_problems = await asyncio.to_thread(
                catalogue_totals, target.database_url, run
            )
            problems += found_problems
        except CallrecError as exc:
            problems.append(f"cannot read the catalogue: {exc}")
            rows = {}
        if options.verify and rows:
            if target.recordings_dir is None:
                problems.append("no recordings directory: files not verified")
            else:
                checks = await asyncio.to_thread(
                    verify_catalogued, run, audio, rows, target.recordings_dir, options.verify
                )
    return make_report(target.name, run, totals, checks, problems)


def run_loadtest(
    options: LoadOptions,
    *,
    server: tuple[str, int] | None = None,
    spawn: bool = False,
    server_pid: int | None = None,
    database_url: str | None = None,
    recordings_dir: Path | None = None,
    server_args: Sequence[str] = (),
    server_env: Mapping[str, str] | None = None,
    workdir: Path | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> LoadReport:
    """``callrec loadtest``: load a running server (``server``) or one spawned for the run.

    For a running server, its processes are found from the listening port (or ``server_pid``)
    and its catalogue and recordings come from ``database_url`` and ``recordings_dir``.
    """
    if spawn == (server is not None):
        raise LoadError("give a server HOST:PORT or --spawn, not both or neither")
    raise_descriptor_limit(2 * options.calls + 200)

    async def main() -> LoadReport:
        if server is not None:
            host, port = server
            pid = server_pid or listener_pid(port)
            target = ServerTarget(
                host=host,
                port=port,
                meter=ProcessMeter.tree(pid) if pid else None,
                database_url=database_url,
                recordings_dir=recordings_dir,
            )
            report = await load_callrec(options, target, progress=progress)
            if pid is None:
                report.problems.append(
                    f"no process listens on port {port} here: no CPU and memory figures"
                )
            return report
        async with spawn_server(
            calls=options.calls, workdir=workdir, server_args=server_args, env=server_env
        ) as spawned:
            target = ServerTarget(
                host=spawned.host,
                port=spawned.port,
                meter=ProcessMeter.tree(spawned.pid),
                database_url=spawned.database_url,
                recordings_dir=spawned.recordings_dir,
            )
            report = await load_callrec(options, target, progress=progress)
            death = spawned.died()
            if death:
                report.problems.append(death)
            if not report.ok and workdir is None:
                # The run's directory goes away with the server: keep its log for a post-mortem.
                kept = Path(tempfile.gettempdir()) / f"callrec-loadtest-{os.getpid()}.log"
                with contextlib.suppress(OSError):
                    kept.write_bytes(spawned.log.read_bytes())
                    report.notes.append(f"server log kept: {kept}")
            return report

    report: LoadReport = run_async(main())
    return report
