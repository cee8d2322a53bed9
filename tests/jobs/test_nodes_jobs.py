"""Two job runners of two nodes, in two real processes, on one catalogue (docs/scaling.md):
``SELECT ... FOR UPDATE SKIP LOCKED`` gives each queued job to one of them, and a periodic
kind both schedule gets one job, run once, per period."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from callrec.catalog import Catalog, JobInfo, JobStore
from callrec.catalog.jobs import DONE
from callrec.jobs import JobKind, JobRunner

JOBS = 160


def run_node(url: str, node: str, go: Any, out: str) -> None:
    """A process: node ``node``'s runner takes what it can of the queue, from ``go`` on, and
    schedules the hourly kind; what it ran goes to ``out`` (JSON)."""
    ran: list[Any] = []

    async def once(job: JobInfo) -> None:
        await asyncio.sleep(0.01)  # long enough for the two runners to overlap
        ran.append(job.payload["n"])

    async def hourly(job: JobInfo) -> None:
        ran.append(f"periodic {job.key}")

    async def own_disk(job: JobInfo) -> None:
        ran.append(f"local {job.key}")

    async def main(runner: JobRunner) -> None:
        for _ in range(3):
            await runner.run_once()
        await runner.stop()

    with Catalog(url) as catalog:
        runner = JobRunner(JobStore(catalog), poll_interval=0.05, node=node)
        runner.register(JobKind(name="test.once", handler=once, concurrency=4))
        runner.register(JobKind(name="test.hourly", handler=hourly))
        runner.schedule("test.hourly", every=timedelta(hours=1))
        # Work on a node's own disk (the archive sweep): one run per period and node.
        runner.register(JobKind(name="test.local", handler=own_disk))
        runner.schedule("test.local", every=timedelta(hours=1), per_node=True)
        go.wait(30)
        asyncio.run(main(runner))
        Path(out).write_text(json.dumps({"ran": ran, "runner": runner.name}))


def test_two_nodes_runners_in_two_processes_run_each_job_once(
    catalog_url: str, tmp_path: Path
) -> None:
    with Catalog(catalog_url) as setup:
        setup.migrate()
        JobStore(setup).enqueue_many(("test.once", f"k{n}", {"n": n}) for n in range(JOBS))
    spawn = multiprocessing.get_context("spawn")
    go = spawn.Event()
    outs = [tmp_path / f"{node}.json" for node in ("alpha", "beta")]
    workers = [
        spawn.Process(target=run_node, args=(catalog_url, node, go, str(out)))
        for node, out in zip(("alpha", "beta"), outs, strict=True)
    ]
    for worker in workers:
        worker.start()
    go.set()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    results = [json.loads(out.read_text()) for out in outs]
    assert [r["runner"].split(":")[0] for r in results] == ["alpha", "beta"]
    numbers = Counter(n for r in results for n in r["ran"] if isinstance(n, int))
    assert sorted(numbers) == list(range(JOBS))
    assert set(numbers.values()) == {1}, "a job ran twice"
    # Both nodes took a share of the queue.
    assert all(any(isinstance(n, int) for n in r["ran"]) for r in results)
    periodic = [n for r in results for n in r["ran"] if str(n).startswith("periodic")]
    assert len(periodic) == 1, periodic
    # Each node ran its own per-node run, and only its own.
    for node, result in zip(("alpha", "beta"), results, strict=True):
        local = [n for n in result["ran"] if str(n).startswith("local")]
        assert len(local) == 1 and local[0].endswith(f"@{node}"), local
    with Catalog(catalog_url) as catalog:
        store = JobStore(catalog)
        assert store.counts() == {
            ("test.once", DONE): JOBS,
            ("test.hourly", DONE): 1,
            ("test.local", DONE): 2,
        }
        (job,) = store.list_jobs(kind="test.hourly")
        assert [a.outcome for a in store.attempts(job.id)] == ["done"]
