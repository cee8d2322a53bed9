"""The job runner over a real catalogue, SQLite and PostgreSQL: enqueue by key, claim once,
retry with back-off, dead after the policy, deferred, periodic, leases of killed runners."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from datetime import timedelta

import pytest

from callrec.catalog import Catalog, JobInfo, JobStore
from callrec.catalog.jobs import DEAD, DONE, QUEUED, RUNNING, Claim, Settlement
from callrec.exceptions import CatalogError
from callrec.jobs import JobDeferred, JobFailed, JobKind, JobRunner, RetryPolicy

#: Retries at once: the tests wait for outcomes, never for the clock.
QUICK = RetryPolicy(max_attempts=3, max_age=timedelta(hours=1), first=0.001, cap=0.002)


def _runner(catalog: Catalog, *kinds: JobKind, name: str | None = None) -> JobRunner:
    runner = JobRunner(JobStore(catalog), poll_interval=0.05, name=name)
    for kind in kinds:
        runner.register(kind)
    return runner


async def _run_until(runner: JobRunner, done: object, rounds: int = 200) -> None:
    """run_once until ``done()`` (retries become due a millisecond later)."""
    for _ in range(rounds):
        await runner.run_once()
        if done():  # type: ignore[operator]
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the jobs did not settle")


async def test_a_job_runs_once_per_key_and_its_history_says_so(catalog: Catalog) -> None:
    seen: list[str] = []

    async def handler(job: JobInfo) -> str:
        seen.append(job.payload["n"])
        return f"handled {job.payload['n']}"

    runner = _runner(catalog, JobKind(name="test.echo", handler=handler))
    assert await runner.enqueue("test.echo", "rec-1", {"n": "one"})
    assert not await runner.enqueue("test.echo", "rec-1", {"n": "again"})  # same key: no-op
    assert await runner.enqueue("test.echo", "rec-2", {"n": "two"})
    assert await runner.run_once() == 2
    assert await runner.run_once() == 0
    await runner.stop()
    assert sorted(seen) == ["one", "two"]
    store = JobStore(catalog)
    job = store.find("test.echo", "rec-1")
    assert job is not None and job.state == DONE and job.attempts == 1
    assert job.finished_at is not None
    (attempt,) = store.attempts(job.id)
    assert (attempt.outcome, attempt.detail, attempt.runner) == ("done", "handled one", runner.name)
    assert runner.runs[("test.echo", "done")] == 2


async def test_a_failed_job_is_retried_then_done(catalog: Catalog) -> None:
    calls = Counter[str]()

    def flaky(job: JobInfo) -> str:  # blocking: runs on the kind's threads
        calls[job.key] += 1
        if calls[job.key] < 3:
            raise JobFailed(f"endpoint said 500 (try {calls[job.key]})")
        return "finally"

    runner = _runner(catalog, JobKind(name="test.flaky", handler=flaky, retry=QUICK))
    await runner.enqueue("test.flaky", "k", {})
    store = JobStore(catalog)
    await _run_until(runner, lambda: store.find("test.flaky", "k").state == DONE)  # type: ignore[union-attr]
    await runner.stop()
    job = store.find("test.flaky", "k")
    assert job is not None and job.attempts == 3
    history = store.attempts(job.id)
    assert [(a.attempt, a.outcome) for a in history] == [(1, "retry"), (2, "retry"), (3, "done")]
    assert history[0].detail == "endpoint said 500 (try 1)"
    assert job.last_error == "endpoint said 500 (try 2)"


async def test_a_job_is_dead_after_its_attempts_and_an_admin_retry_queues_it(
    catalog: Catalog,
) -> None:
    async def broken(job: JobInfo) -> str:
        raise RuntimeError("a bug in the handler")

    runner = _runner(catalog, JobKind(name="test.broken", handler=broken, retry=QUICK))
    await runner.enqueue("test.broken", "k", {})
    store = JobStore(catalog)
    await _run_until(runner, lambda: store.find("test.broken", "k").state == DEAD)  # type: ignore[union-attr]
    job = store.find("test.broken", "k")
    assert job is not None and job.attempts == 3
    assert job.last_error == "RuntimeError: a bug in the handler"
    assert [a.outcome for a in store.attempts(job.id)] == ["retry", "retry", "dead"]
    assert await runner.run_once() == 0  # dead stays dead
    assert store.retry(job.id)
    again = store.get(job.id)
    assert again is not None and (again.state, again.attempts) == (QUEUED, 0)
    # Three more attempts, then dead again.
    await _run_until(runner, lambda: len(store.attempts(job.id)) == 6)
    await runner.stop()
    assert [a.outcome for a in store.attempts(job.id)][3:] == ["retry", "retry", "dead"]


async def test_a_deferred_job_waits_without_spending_an_attempt(catalog: Catalog) -> None:
    ready = False

    async def waits(job: JobInfo) -> str:
        if not ready:
            raise JobDeferred("not catalogued yet", delay=0.001)
        return "ran"

    runner = _runner(catalog, JobKind(name="test.wait", handler=waits, retry=QUICK))
    await runner.enqueue("test.wait", "k", {})
    for _ in range(5):  # more than max_attempts deferrals: none counts
        await runner.run_once()
        await asyncio.sleep(0.005)
    store = JobStore(catalog)
    job = store.find("test.wait", "k")
    assert job is not None and job.state == QUEUED and job.attempts == 0
    ready = True
    await _run_until(runner, lambda: store.find("test.wait", "k").state == DONE)  # type: ignore[union-attr]
    await runner.stop()
    outcomes = [a.outcome for a in store.attempts(job.id)]
    assert outcomes[-1] == "done" and set(outcomes[:-1]) == {"deferred"}


def test_retry_policy_backs_off_exponentially_with_jitter() -> None:
    policy = RetryPolicy(first=10, cap=3600)
    assert [policy.delay(n, 0.999999) for n in (1, 2, 3)] == pytest.approx([10, 20, 40])
    assert policy.delay(1, 0.0) == 5.0  # jitter: half to all of the delay
    assert policy.delay(40, 0.999999) == pytest.approx(3600)


def test_two_runners_in_two_threads_claim_each_job_once(catalog_url: str) -> None:
    with Catalog(catalog_url) as setup:
        setup.migrate()
        JobStore(setup).enqueue_many(("test.once", f"k{n}", {"n": n}) for n in range(120))
    ran: list[tuple[str, int]] = []
    lock = threading.Lock()

    def work(runner_name: str) -> None:
        def handler(job: JobInfo) -> None:
            with lock:
                ran.append((runner_name, job.payload["n"]))

        with Catalog(catalog_url) as catalog:
            runner = _runner(
                catalog, JobKind(name="test.once", handler=handler, concurrency=4), name=runner_name
            )

            async def go() -> None:
                await runner.run_once()
                await runner.stop()

            asyncio.run(go())

    threads = [threading.Thread(target=work, args=(f"r{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    numbers = Counter(n for _, n in ran)
    assert sorted(numbers) == list(range(120))
    assert set(numbers.values()) == {1}, "a job ran twice"
    with Catalog(catalog_url) as catalog:
        assert JobStore(catalog).counts() == {("test.once", DONE): 120}


async def test_an_expired_lease_makes_the_job_claimable_again(catalog: Catalog) -> None:
    store = JobStore(catalog)
    store.enqueue("test.lease", "k", {})
    # A runner on another host claimed it, then vanished: its lease runs out.
    (lost,) = store.claim(
        "elsewhere:1:aaaaaa", [Claim(kind="test.lease", limit=1, lease=timedelta(0))]
    )
    assert lost.state == RUNNING
    ran: list[int] = []

    async def handler(job: JobInfo) -> None:
        ran.append(job.attempts)

    runner = _runner(catalog, JobKind(name="test.lease", handler=handler))
    assert await runner.run_once() == 1
    await runner.stop()
    assert ran == [2]  # the lost run counts as an attempt
    # The vanished runner's late report changes nothing.
    assert not store.settle(lost, outcome="done", started_at=lost.run_after)
    assert [a.runner for a in store.attempts(lost.id)] == [runner.name]


async def test_a_killed_runner_on_this_host_gives_its_jobs_back_at_once(catalog: Catalog) -> None:
    """A process that claimed a job (lease: an hour) is killed with SIGKILL; a runner that
    starts on the same host does not wait for the lease."""
    store = JobStore(catalog)
    store.enqueue("test.killed", "k", {})
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        name = f"{socket.gethostname()}:{child.pid}:abcdef"
        store.claim(name, [Claim(kind="test.killed", limit=1, lease=timedelta(hours=1))])
        ran: list[str] = []

        async def handler(job: JobInfo) -> None:
            ran.append(job.key)

        runner = _runner(catalog, JobKind(name="test.killed", handler=handler))
        assert await runner.run_once() == 0  # its process lives: the lease holds
        os.kill(child.pid, 9)
        child.wait()
        assert await runner.run_once() == 1
        await runner.stop()
        assert ran == ["k"]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


async def test_a_schedule_makes_one_job_per_period_across_runners(catalog: Catalog) -> None:
    runs: list[str] = []

    async def sweep(job: JobInfo) -> None:
        runs.append(job.key)

    runners = []
    for _ in range(2):
        runner = _runner(catalog, JobKind(name="test.daily", handler=sweep))
        runner.schedule("test.daily", every=timedelta(days=1))
        runners.append(runner)
    for runner in runners:
        await runner.run_once()
        await runner.stop()
    assert len(runs) == 1
    assert runs[0].endswith("T00:00:00+00:00")


async def test_the_runner_loop_runs_enqueued_jobs_and_stops(catalog: Catalog) -> None:
    done = asyncio.Event()

    async def handler(job: JobInfo) -> None:
        done.set()

    runner = _runner(catalog, JobKind(name="test.loop", handler=handler))
    await runner.start()
    try:
        await runner.enqueue("test.loop", "k", {})
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await runner.stop()


def test_unknown_kinds_and_bad_policies_are_refused(catalog: Catalog) -> None:
    runner = _runner(catalog)
    with pytest.raises(ValueError, match="unknown job kind"):
        runner.schedule("nothing", every=timedelta(hours=1))
    with pytest.raises(ValueError, match="concurrency"):
        JobKind(name="x", handler=lambda job: None, concurrency=0)
    with pytest.raises(CatalogError, match="unknown job outcome"):
        JobStore(catalog).settle(
            JobStore(catalog).list_jobs()[0] if JobStore(catalog).list_jobs() else _fake(),
            outcome="maybe",
            started_at=_fake().created_at,
        )


def _fake() -> JobInfo:
    from callrec.catalog.records import utcnow

    now = utcnow()
    return JobInfo(
        id=0,
        kind="x",
        key="",
        payload={},
        state=RUNNING,
        attempts=1,
        run_after=now,
        claimed_by="x",
        lease_until=None,
        last_error=None,
        created_at=now,
        finished_at=None,
    )


def test_purge_keeps_dead_jobs_and_the_installed_mark(catalog: Catalog) -> None:
    from callrec.catalog.records import utcnow

    store = JobStore(catalog)
    installed = store.installed_at()
    assert installed is not None
    for key in ("done", "dead"):
        store.enqueue("test.purge", key, {})
    for job in store.claim("me", [Claim(kind="test.purge", limit=2, lease=timedelta(1))]):
        store.settle(job, outcome=job.key, started_at=job.run_after)
    assert store.purge(utcnow() + timedelta(seconds=1)) == 1
    assert [j.key for j in store.list_jobs()] == ["dead"]
    assert store.installed_at() == installed


async def test_a_per_node_kind_is_claimed_only_by_the_node_its_key_names(
    catalog: Catalog,
) -> None:
    """An upload's key ends ``@node``: only that node's runners take it (the file is on its
    disk); a key naming no node (a job from before nodes) any node takes."""
    seen: list[tuple[str, str]] = []

    def kind(node: str) -> JobKind:
        def handler(job: JobInfo) -> str:
            seen.append((node, job.key))
            return "ok"

        return JobKind(name="test.local_file", handler=handler, per_node=True)

    alpha = JobRunner(JobStore(catalog), poll_interval=0.05, node="alpha")
    beta = JobRunner(JobStore(catalog), poll_interval=0.05, node="beta")
    alpha.register(kind("alpha"))
    beta.register(kind("beta"))
    for key in ("r1@beta", "r2@alpha", "r3@beta", "r4"):
        await alpha.enqueue("test.local_file", key, {})
    # alpha runs first and would take everything were the kind not per node.
    assert await alpha.run_once() == 2
    assert await beta.run_once() == 2
    await alpha.stop()
    await beta.stop()
    assert sorted(seen) == [
        ("alpha", "r2@alpha"),
        ("alpha", "r4"),
        ("beta", "r1@beta"),
        ("beta", "r3@beta"),
    ]


async def test_settle_many_settles_several_attempts_in_one_go(catalog: Catalog) -> None:
    store = JobStore(catalog)
    store.enqueue_many([("test.many", k, {}) for k in ("a", "b", "c")])
    mine = store.claim("me:1:aaaaaa", [Claim(kind="test.many", limit=2, lease=timedelta(1))])
    (stale,) = store.claim("me:1:aaaaaa", [Claim(kind="test.many", limit=1, lease=timedelta(0))])
    # Its lease ran out and another runner took it: its settlement below changes nothing.
    (taken,) = store.claim("other:2:bbbbbb", [Claim(kind="test.many", limit=1, lease=timedelta(1))])
    assert taken.id == stale.id
    first, second = mine
    answers = store.settle_many(
        [
            Settlement(job=first, outcome="done", started_at=first.run_after),
            Settlement(job=stale, outcome="done", started_at=stale.run_after),
            Settlement(job=second, outcome="retry", started_at=second.run_after, detail="later"),
        ]
    )
    assert answers == [True, False, True]
    done, other, again = (store.find("test.many", j.key) for j in (first, stale, second))
    assert done is not None and done.state == DONE
    assert other is not None and other.state == RUNNING and other.claimed_by == "other:2:bbbbbb"
    assert again is not None and again.state == QUEUED and again.last_error == "later"
    assert [a.outcome for a in store.attempts(first.id)] == ["done"]
    assert store.attempts(stale.id) == []
    assert store.settle_many([]) == []
    with pytest.raises(CatalogError, match="unknown job outcome"):
        store.settle_many([Settlement(job=first, outcome="maybe", started_at=first.run_after)])
