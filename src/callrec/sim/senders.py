"""Sender processes: a load run's calls spread over processes, and the run's readings.

:func:`run_load` gives calls ``i`` with ``i % senders == s`` to sender process ``s``
(:func:`default_senders`: one process tops out near 2,000 calls). This process is sender 0
and takes the readings; the others are started with ``spawn``, share their counters with it
through shared memory, start on the same clock and hand their calls back at the end, all
gathered into a :class:`~callrec.sim.loadrun.LoadRun`. Senders run at a raised priority
(:data:`SENDER_NICE`) while they send, on uvloop (:func:`run_async`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Final

from callrec.sim.audioloop import AudioLoop
from callrec.sim.loadgen import LoadGenerator, _Part, _Shared, plan_calls
from callrec.sim.loadrun import (
    LoadError,
    LoadOptions,
    LoadRun,
    MediaTarget,
    Progress,
    ServerTarget,
)

logger = logging.getLogger(__name__)

#: Niceness of the sender processes while they send. The generator stands in for phones,
#: which are machines of their own: the recorder under test (hundreds of GStreamer processes,
#: or a saturated server) must not starve it, or it measures its own lateness. Needs root
#: (else the sender keeps its priority and the report says so); children we start (server,
#: pipelines) are put back to the default.
SENDER_NICE: Final = -10
#: Calls one sender process takes by default (see :func:`default_senders`).
CALLS_PER_SENDER: Final = 1500


@contextlib.contextmanager
def sender_priority() -> Iterator[int]:
    """Raise this thread's priority to :data:`SENDER_NICE` if allowed; yield the niceness it
    runs at; put it back afterwards."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, min(before, SENDER_NICE))
    try:
        yield os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, before)


def default_senders(calls: int) -> int:
    """Sender processes for ``calls``: one per :data:`CALLS_PER_SENDER`, at most one per core.
    A loopback send costs ~5-7 us of CPU here (the kernel delivers the datagram in the
    sender's time), so one process tops out near 2,000 calls."""
    return max(1, min(os.cpu_count() or 1, -(-calls // CALLS_PER_SENDER)))


def _sender_main(
    options: LoadOptions,
    target: ServerTarget | MediaTarget,
    indices: list[int],
    shared: _Shared,
    slot: int,
    conn: Any,
) -> None:  # pragma: no cover - runs in a sender process
    """A sender process: say ready, take the start time, run its share, send it back."""
    audio = AudioLoop.for_options(options)
    generator = LoadGenerator(options, target, audio, indices=indices, shared=shared, slot=slot)
    conn.send("ready")
    if not conn.poll(60):
        return
    begin_wall = conn.recv()
    try:
        with sender_priority():
            part = run_async(generator.run(begin_wall))
    except LoadError as exc:
        part = _Part(calls=[], lags=[])
        logger.error("sender %d: %s", slot, exc)
    conn.send(part)
    conn.close()


async def run_load(
    options: LoadOptions,
    target: ServerTarget | MediaTarget,
    *,
    audio: AudioLoop | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> LoadRun:
    """Make the load against ``target``: the phone side and the readings, no verdict.

    With ``options.senders`` > 1, calls ``i`` with ``i % senders == s`` go out from sender
    process ``s`` (this process is sender 0 and takes the readings).
    """
    audio = audio or AudioLoop.for_options(options)
    senders = options.senders or default_senders(options.calls)
    senders = min(senders, options.calls)
    shared = _Shared(senders, options.calls)
    share = [list(range(s, options.calls, senders)) for s in range(senders)]
    generator = LoadGenerator(
        options, target, audio, indices=share[0], shared=shared, progress=progress
    )
    began = datetime.now(UTC)
    baseline = generator.meter.sample() if generator.meter is not None else None
    children: list[tuple[Any, Any]] = []
    priority = contextlib.ExitStack()
    try:
        nice = priority.enter_context(sender_priority())
        begin_wall = None
        if senders > 1:
            children = _start_senders(options, target, share, shared)
            begin_wall = time.time() + 0.2
            for _, conn in children:
                conn.send(begin_wall)
        part = await generator.run(begin_wall)
        parts = [part]
        loop = asyncio.get_running_loop()
        for process, conn in children:
            deadline = loop.time() + 4 * options.answer_timeout + 30
            while not conn.poll() and process.is_alive() and loop.time() < deadline:
                await asyncio.sleep(0.05)
            if conn.poll():
                parts.append(conn.recv())
    finally:
        priority.close()
        for process, conn in children:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
            conn.close()
    calls = plan_calls(options)
    for piece in parts:
        for call in piece.calls:
            calls[call.index] = call
    answered = {c.index for piece in parts for c in piece.calls}
    for call in calls:
        if call.index not in answered:
            call.error = "its sender process did not report"
    return LoadRun(
        options=options,
        calls=calls,
        began=began,
        baseline=baseline,
        marks=generator.marks,
        samples=list(generator.meter.samples) if generator.meter is not None else [],
        lags=[lag for piece in parts for lag in piece.lags],
        kernel_drops=generator.kernel_drops,
        nice=nice,
    )


def _start_senders(
    options: LoadOptions,
    target: ServerTarget | MediaTarget,
    share: list[list[int]],
    shared: _Shared,
) -> list[tuple[Any, Any]]:
    """Start sender processes 1.. and wait (bounded) until each is ready."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    plain = dataclasses.replace(target, meter=None)  # the meter stays here
    children = []
    for slot in range(1, len(share)):
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=_sender_main,
            args=(options, plain, share[slot], shared, slot, child),
            name=f"callrec-loadgen-{slot}",
            daemon=True,
        )
        process.start()
        child.close()
        children.append((process, parent))
    for process, conn in children:
        if not conn.poll(60) or conn.recv() != "ready":
            raise LoadError(f"sender process {process.name} did not start")
    return children


def run_async(coro: Any) -> Any:
    """Run ``coro`` on uvloop when it is there (it is a dependency on POSIX)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
