"""Job runner throughput: how many no-op jobs per second one or more runners claim, run and
settle, on SQLite and PostgreSQL (the runner's own cost: claiming, leases, history rows).

    .venv/bin/python benchmarks/jobs.py                          # both backends
    .venv/bin/python benchmarks/jobs.py --jobs 20000 --runners 2 --backend postgresql

Each runner is a thread with its own event loop and catalogue connection, as two processes
would be; the jobs are enqueued beforehand. Prints jobs/s and checks that each job ran once.
A PostgreSQL database ``callrec_bench_<random>`` is created and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg

from callrec.catalog import Catalog, JobInfo, JobStore
from callrec.jobs import JobKind, JobRunner


def run(url: str, jobs: int, runners: int, concurrency: int) -> float:
    with Catalog(url) as catalog:
        catalog.migrate()
        store = JobStore(catalog)
        for start in range(0, jobs, 5000):
            store.enqueue_many(
                ("bench.noop", str(n), {"n": n}) for n in range(start, min(jobs, start + 5000))
            )
    ran: Counter[int] = Counter()
    lock = threading.Lock()

    async def noop(job: JobInfo) -> None:
        with lock:
            ran[job.payload["n"]] += 1

    def work() -> None:
        with Catalog(url) as catalog:
            runner = JobRunner(JobStore(catalog))
            runner.register(JobKind(name="bench.noop", handler=noop, concurrency=concurrency))

            async def go() -> None:
                await runner.run_once()
                await runner.stop()

            asyncio.run(go())

    threads = [threading.Thread(target=work) for _ in range(runners)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - began
    assert len(ran) == jobs and set(ran.values()) == {1}, "a job ran twice or not at all"
    return jobs / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--runners", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-host", default="127.0.0.1")
    args = parser.parse_args()
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            rate = run(
                f"sqlite:///{Path(tmp) / 'jobs.db'}", args.jobs, args.runners, args.concurrency
            )
        print(f"sqlite: {args.jobs} jobs, {args.runners} runners: {rate:.0f} jobs/s")
    if args.backend in ("postgresql", "both"):
        name = f"callrec_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(
            host=args.pg_host, user="postgres", dbname="postgres", autocommit=True
        ) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
            try:
                url = f"postgresql+psycopg://postgres@{args.pg_host}/{name}"
                rate = run(url, args.jobs, args.runners, args.concurrency)
                print(f"postgresql: {args.jobs} jobs, {args.runners} runners: {rate:.0f} jobs/s")
            finally:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )
                admin.execute(f'DROP DATABASE "{name}"')


if __name__ == "__main__":
    main()
