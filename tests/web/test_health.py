"""Honest catalogue states (issue 12): ``/health`` answers within a second with the state of
each part, whatever the catalogue does, and ``/metrics`` counts what the journal holds and
the starts that were refused. A real server with the web on loopback, real phone calls, a
real SQLite catalogue made to fail for real (its file moved away) or to hang (a read and the
journal's write blocked until the test lets them go)."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from callrec.engine import JournalStatus
from callrec.exceptions import CatalogError
from callrec.health import WorkerReport, WorkerReports, combine
from callrec.service import Service
from callrec.sim.call import record_call
from callrec.sim.phone import PhoneCall
from callrec.web.health import BoundedProbe, ProbeStuck
from tests.support.audio import speech_like_signal
from tests.support.net import tcp_listeners
from tests.support.settings import web_settings
from tests.support.waiting import wait_catalogued, wait_for
from tests.support.web import Site, start_site, stop_site

#: /health must answer within 1 s (the requirement); measured with room for a loaded machine.
ANSWER_BOUND = 1.5
#: Seconds the journal may take to retry once the catalogue is back (its back-off grows to
#: 10 s): a bound on a wait, not a timing assertion.
RECOVERY = 30.0


@pytest_asyncio.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    s = await start_site(tmp_path)
    try:
        yield s
    finally:
        await stop_site(s)


async def get_health(site: Site, path: str = "/api/v1/health") -> tuple[httpx.Response, float]:
    """The answer, and the seconds it took."""
    async with site.client() as c:
        begin = time.monotonic()
        r = await c.get(path)
        return r, time.monotonic() - begin


async def metrics(site: Site) -> dict[str, float]:
    async with site.client() as c:
        r = await c.get("/metrics")
    assert r.status_code == 200, r.text
    values: dict[str, float] = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def call(site: Site, session_id: str) -> None:
    """One whole call, answered ``success`` (record first: whatever the catalogue does)."""
    result = await record_call(
        "127.0.0.1",
        site.server.control_port,
        codec="PCMA",
        pcm=speech_like_signal(0.5, 8000),
        realtime=False,
        session_id=session_id,
    )
    assert result.ok, result.error


async def healthy(site: Site) -> dict[str, Any] | None:
    r, _ = await get_health(site)
    return r.json() if r.status_code == 200 else None


async def wait_healthy(site: Site) -> dict[str, Any]:
    """Poll /health until it says ok (the journal retries with a back-off)."""
    deadline = time.monotonic() + RECOVERY
    while (body := await healthy(site)) is None:
        assert time.monotonic() < deadline, f"/health still not ok: {(await get_health(site))[0]}"
        await asyncio.sleep(0.2)
    return body


# -- all well ------------------------------------------------------------------------------


async def test_health_is_ok_with_every_part(site: Site) -> None:
    await call(site, "70001")
    await wait_catalogued(site.server)
    for path in ("/api/v1/health", "/health"):
        r, _ = await get_health(site, path)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ok" and body["database"] is True and body["recording"] is True
        assert body["catalogue"] == {"state": "ok", "last_error": None, "journal_state": "ok"}
        disk = body["recordings_disk"]
        assert disk["state"] == "ok" and disk["writable"] is True and disk["error"] is None
        assert disk["free_bytes"] >= disk["reserve_bytes"] > 0
        journal = body["journal"]
        assert journal["state"] == "ok" and journal["backlog"] == 0 and journal["unwritten"] == 0
        assert journal["oldest_age"] is None and journal["failures"] == 0
        assert body["workers"] is None  # no --workers
    values = await metrics(site)
    assert values["callrec_catalogue_up"] == 1
    assert values["callrec_journal_backlog"] == 0
    assert values["callrec_journal_oldest_seconds"] == 0
    assert values["callrec_journal_unwritten"] == 0
    assert values["callrec_journal_replay_failures_total"] == 0
    assert values['callrec_refused_starts_total{reason="busy"}'] == 0
    assert values['callrec_recordings{status="complete"}'] == 1


# -- the catalogue fails -------------------------------------------------------------------


async def test_catalogue_file_moved_away_is_down_then_recovers(site: Site) -> None:
    db = Path(site.server.catalog.url.removeprefix("sqlite:///"))
    assert db.is_file()
    moved = db.with_name(db.name + ".moved")
    os.replace(db, moved)  # what `rm` or a careless restore does: SQLite would write to nothing
    try:
        await call(site, "70002")
        r, took = await get_health(site)
        assert took < ANSWER_BOUND
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "degraded" and body["database"] is False
        assert body["catalogue"]["state"] == "down"
        assert "is gone" in body["catalogue"]["last_error"]
        assert body["recordings_disk"]["state"] == "ok"  # the audio is fine: record first
        assert body["journal"]["backlog"] > 0
        values = await metrics(site)
        assert values["callrec_catalogue_up"] == 0
        assert values["callrec_journal_backlog"] > 0
        assert 'callrec_recordings{status="complete"}' not in values  # not asked of it
        await wait_for(
            lambda: site.server.journal.status().failures > 0,
            what="the journal to meet the missing file",
        )
        assert (await metrics(site))["callrec_journal_replay_failures_total"] > 0
    finally:
        os.replace(moved, db)
    body = await wait_healthy(site)
    assert body["catalogue"]["state"] == "ok" and body["journal"]["backlog"] == 0
    assert [r.status for r in site.catalog.find() if r.session_id == "70002"] == ["complete"]
    values = await metrics(site)
    assert values["callrec_catalogue_up"] == 1 and values["callrec_journal_backlog"] == 0


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs for the catalogue alone (mounting needs root, which `make test` has)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_a_full_catalogue_reads_but_is_degraded_then_recovers(
    tmp_path: Path, small_fs: Path
) -> None:
    site = await start_site(tmp_path, database_url=f"sqlite:///{small_fs / 'catalog.db'}")
    try:
        await call(site, "70010")
        await wait_catalogued(site.server)
        filler = small_fs / "filler.bin"
        with filler.open("wb") as fh:  # the catalogue's filesystem full; the recordings' not
            fh.write(b"\0" * shutil.disk_usage(small_fs).free)
        for n in range(3):
            await call(site, f"7001{n + 1}")
        await wait_for(
            lambda: site.server.journal.status().failures > 0,
            what="the journal to meet the full disk",
        )
        r, took = await get_health(site)
        assert took < ANSWER_BOUND and r.status_code == 503
        catalogue = r.json()["catalogue"]
        assert catalogue["state"] == "degraded" and catalogue["journal_state"] == "degraded"
        assert "full" in catalogue["last_error"]
        assert r.json()["recordings_disk"]["state"] == "ok"
        values = await metrics(site)
        assert values["callrec_catalogue_up"] == 0 and values["callrec_journal_backlog"] > 0
        # It still answers reads: the rows it has are counted.
        assert values['callrec_recordings{status="complete"}'] == 1
        filler.unlink()
        await wait_healthy(site)
        await wait_catalogued(site.server)
        statuses = [r.status for r in site.catalog.find() if r.session_id.startswith("7001")]
        assert statuses == ["complete"] * 4
    finally:
        await stop_site(site)


def block_until(release: threading.Event, fn: Callable[..., Any], calls: list[int]) -> Any:
    def blocked(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        release.wait()
        return fn(*args, **kwargs)

    return blocked


async def test_hung_catalogue_answers_at_once_with_one_probe_in_flight(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = site.catalog
    release = threading.Event()
    reads: list[int] = []
    writes: list[int] = []
    # A database that takes the connection and never answers (PostgreSQL stopped with
    # SIGSTOP): every read and the journal's write wait until the test lets them go.
    monkeypatch.setattr(catalog, "revision", block_until(release, catalog.revision, reads))
    monkeypatch.setattr(
        catalog, "apply_journal", block_until(release, catalog.apply_journal, writes)
    )
    try:
        await call(site, "70003")
        await wait_for(lambda: writes, what="the journal to start its write")
        hung_since = time.monotonic()
        answers = 0
        # Asked again and again over several seconds of hang: never slower than the bound.
        while time.monotonic() - hung_since < 6:
            r, took = await get_health(site)
            assert took < ANSWER_BOUND, f"/health took {took:.2f} s"
            assert r.status_code == 503
            catalogue = r.json()["catalogue"]
            assert catalogue["state"] == "hung", catalogue
            answers += 1
        assert answers >= 5
        # The first probe is still stuck: no second thread was sent after it.
        assert len(reads) == 1
        begin = time.monotonic()
        values = await metrics(site)
        assert time.monotonic() - begin < ANSWER_BOUND
        assert values["callrec_catalogue_up"] == 0
        assert values["callrec_journal_backlog"] > 0
        assert values["callrec_journal_oldest_seconds"] > 0
    finally:
        release.set()
    await wait_healthy(site)
    await wait_catalogued(site.server)
    assert [r.status for r in catalog.find() if r.session_id == "70003"] == ["complete"]


async def test_a_server_started_while_the_catalogue_hangs_serves_health(tmp_path: Path) -> None:
    server = Service(web_settings(tmp_path))
    catalog = server.catalog
    catalog.migrate()  # the file exists: it is a catalogue that hangs, not one never made
    release = threading.Event()
    calls: list[int] = []
    for name in ("migrate", "revision", "count_users"):
        setattr(catalog, name, block_until(release, getattr(catalog, name), calls))
    try:
        await server.start()  # waits for the catalogue a few seconds, not for good
        assert server.web is not None
        site = Site(server=server, web=server.web, base=server.web.url)
        r, took = await get_health(site, "/health")
        assert took < ANSWER_BOUND
        assert r.status_code == 503 and r.json()["catalogue"]["state"] == "hung"
        await call(site, "70006")
    finally:
        release.set()
    try:
        await wait_healthy(site)
        await wait_catalogued(server)
        assert [r.status for r in catalog.find() if r.session_id == "70006"] == ["complete"]
        # The first admin was made once the catalogue answered.
        await wait_for(lambda: catalog.get_user_by_name("admin"), what="the first admin")
    finally:
        await server.stop()


# -- the disk and refused starts -----------------------------------------------------------


async def test_under_the_disk_reserve_health_says_so_and_refusals_are_counted(
    tmp_path: Path,
) -> None:
    site = await start_site(tmp_path, disk_reserve_bytes=1 << 62)
    try:
        phone = PhoneCall("127.0.0.1", site.server.control_port, session_id="70004", codec="PCMA")
        try:
            assert (await phone.start())["reason"] == "disk_full"
        finally:
            await phone.close()
        odd = PhoneCall("127.0.0.1", site.server.control_port, session_id="70005", codec="AMR")
        try:
            assert (await odd.start())["reason"] == "unsupported_codec"
        finally:
            await odd.close()
        r, _ = await get_health(site)
        assert r.status_code == 503
        body = r.json()
        assert body["catalogue"]["state"] == "ok"
        disk = body["recordings_disk"]
        assert disk["state"] == "degraded" and disk["free_bytes"] < disk["reserve_bytes"]
        values = await metrics(site)
        assert values['callrec_refused_starts_total{reason="disk_full"}'] == 1
        assert values['callrec_refused_starts_total{reason="unsupported_codec"}'] == 1
        assert values['callrec_refused_starts_total{reason="busy"}'] == 0
    finally:
        await stop_site(site)


async def test_workers_report_their_refusals_and_are_counted(tmp_path: Path) -> None:
    low = random.randrange(30000, 60000, 100)
    site = await start_site(
        tmp_path,
        workers=2,
        media_port_min=low,
        media_port_max=low + 39,
        disk_reserve_bytes=1 << 62,
    )
    try:
        port = site.server.control_port
        await wait_for(
            lambda: len(tcp_listeners(port)) >= 2,
            what="the worker to listen on the control port",
            timeout=30,
            interval=0.1,
        )
        phones = [
            PhoneCall("127.0.0.1", port, session_id=f"7100{i}", codec="PCMA") for i in range(12)
        ]
        try:
            answers = await asyncio.gather(*(p.start() for p in phones))
        finally:
            for phone in phones:
                await phone.close()
        assert [a["reason"] for a in answers] == ["disk_full"] * 12
        # The kernel spread the connections over both processes.
        assert site.server.engine.admission.refused["disk_full"] < 12
        key = 'callrec_refused_starts_total{reason="disk_full"}'
        deadline = time.monotonic() + 10
        while (values := await metrics(site))[key] < 12:
            assert time.monotonic() < deadline, f"{values[key]} refusals counted, not 12"
            await asyncio.sleep(0.2)
        assert values[key] == 12
        assert values["callrec_workers_expected"] == 1 and values["callrec_workers_alive"] == 1
        r, _ = await get_health(site)
        assert r.json()["workers"] == {"state": "ok", "expected": 1, "alive": 1}
    finally:
        await stop_site(site)


async def test_failing_token_touches_are_logged_once_per_episode(
    site: Site, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = site.catalog
    touch = catalog.touch_token
    touched: list[int] = []

    def read_only(*args: Any, **kwargs: Any) -> None:
        touched.append(1)
        raise CatalogError("attempt to write a readonly database")

    monkeypatch.setattr(catalog, "touch_token", read_only)
    async with site.client("admin") as c:
        for _ in range(5):
            assert (await c.get("/api/v1/me")).status_code == 200
            # Each request finds the token due for a touch again (the last one failed).
            await wait_for(lambda: not site.web.app.state.ctx.touches._pending, what="touch")
        assert len(touched) == 5
        failures = [r for r in caplog.records if "last used" in r.getMessage()]
        assert len(failures) == 1 and failures[0].levelname == "ERROR"
        assert not [r for r in caplog.records if "catalogue write failed" in r.getMessage()]
        monkeypatch.setattr(catalog, "touch_token", touch)
        assert (await c.get("/api/v1/me")).status_code == 200
        await wait_for(lambda: not site.web.app.state.ctx.touches._pending, what="touch")
    assert [r.getMessage() for r in caplog.records if "last used" in r.getMessage()][1:] == [
        "web: cannot note when tokens and sessions were last used: works again"
    ]


# -- the pieces ----------------------------------------------------------------------------


async def test_a_bounded_probe_is_shared_and_never_stacks() -> None:
    release = threading.Event()
    started: list[int] = []

    def slow() -> str:
        started.append(1)
        release.wait()
        return "answer"

    probe = BoundedProbe(slow, timeout=0.3, name="test")
    try:
        # Two callers at once share one probe, and both hear it is stuck.
        results = await asyncio.gather(probe(), probe(), return_exceptions=True)
        assert all(isinstance(r, ProbeStuck) for r in results)
        # Later callers hear at once (no wait, no new thread).
        begin = time.monotonic()
        with pytest.raises(ProbeStuck, match="no answer for"):
            await probe()
        assert time.monotonic() - begin < 0.3
        assert len(started) == 1
    finally:
        release.set()
    await wait_for(lambda: probe._running is not None and probe._running.done(), what="the end")
    assert await probe() == "answer" and len(started) == 2


def _status(**changes: Any) -> JournalStatus:
    values: dict[str, Any] = dict(
        state="ok",
        backlog=0,
        oldest_age=None,
        unwritten=0,
        failures=0,
        last_error=None,
        applied=0,
    )
    return JournalStatus(**{**values, **changes})


def test_processes_journals_combine_to_the_worst_and_the_sums() -> None:
    main = _status(backlog=2, oldest_age=1.5, failures=1, applied=10)
    worker = _status(
        state="hung", backlog=3, oldest_age=4.0, unwritten=1, last_error="slow", applied=5
    )
    both = combine([main, worker], failures=2, applied=7)
    assert both.state == "hung" and both.last_error == "slow"
    assert (both.backlog, both.oldest_age, both.unwritten) == (5, 4.0, 1)
    assert (both.failures, both.applied) == (3, 22)


def test_a_worker_that_ended_keeps_its_counts_but_not_its_gauges() -> None:
    reports = WorkerReports()
    reports.update(1, WorkerReport(_status(backlog=4, failures=2), {"busy": 3}))
    reports.update(1, WorkerReport(_status(backlog=1, failures=3), {"busy": 5}))
    assert reports.refused() == {"busy": 5} and len(reports.journals()) == 1
    reports.ended(1)
    assert reports.journals() == [] and reports.ended_failures == 3
    # Its successor counts from zero: the totals go on from where they were.
    reports.update(1, WorkerReport(_status(failures=1), {"busy": 1, "disk_full": 2}))
    assert reports.refused() == {"busy": 6, "disk_full": 2}


def test_refused_connections_of_workers_add_up_and_survive_a_worker() -> None:
    control = ("control", "too_many_connections")
    reports = WorkerReports()
    reports.update(1, WorkerReport(_status(), {}, {control: 4}))
    reports.update(2, WorkerReport(_status(), {}, {control: 1, ("control", "forbidden"): 2}))
    assert reports.refused_connections() == {control: 5, ("control", "forbidden"): 2}
    reports.ended(1)
    reports.update(1, WorkerReport(_status(), {}, {control: 1}))
    assert reports.refused_connections() == {control: 6, ("control", "forbidden"): 2}
