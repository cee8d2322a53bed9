"""Webhooks against a real HTTP receiver on loopback, on SQLite and PostgreSQL: signed
deliveries checked with the docs' own verification code, retries after 500s and timeouts,
one slow endpoint not delaying another, and the events other parts emit."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from callrec.catalog import Catalog, JobStore, RecordingInfo
from callrec.catalog.jobs import DONE
from callrec.config import Settings
from callrec.jobs import JobRunner, RetryPolicy, webhooks
from callrec.jobs.completion import KIND, Completion
from tests.support.catalog import finish_values, new_recording
from tests.support.receiver import webhook_receiver
from tests.support.settings import server_settings

SECRET = "test secret"
QUICK = RetryPolicy(max_attempts=5, max_age=timedelta(hours=1), first=0.001, cap=0.002)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def docs_verify() -> Callable[..., bool]:
    """The ``verify_signature`` of docs/webhooks.md, run as the docs show it."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    code = next(b for b in blocks if "def verify_signature" in b)
    scope: dict[str, Any] = {}
    exec(compile(code, str(DOCS), "exec"), scope)
    return scope["verify_signature"]  # type: ignore[no-any-return]


def _settings(tmp_path: Path, urls: list[str], **overrides: Any) -> Settings:
    return server_settings(
        tmp_path,
        webhook_url=tuple(urls),
        webhook_secret=SECRET,
        webhook_timeout=overrides.pop("webhook_timeout", 5.0),
        web_public_url="https://rec.example.com",
        **overrides,
    )


def _runner(catalog: Catalog, settings: Settings, tmp_path: Path) -> tuple[JobRunner, Completion]:
    runner = JobRunner(JobStore(catalog), poll_interval=0.05)
    completion = Completion(runner, catalog, settings, root=tmp_path / "recordings")
    for kind in completion.kinds():
        runner.register(kind)
    for kind in webhooks.webhook_kinds(settings, retry=QUICK):
        runner.register(kind)
    return runner, completion


def _finished(catalog: Catalog, n: int = 0) -> RecordingInfo:
    uid = f"{n:032x}"
    rec_id = catalog.create_recording(new_recording(n, uid=uid))
    catalog.finish_recording(rec_id, **finish_values())
    info = catalog.get(rec_id)
    assert info is not None
    return info


async def _settle(runner: JobRunner, catalog: Catalog, rounds: int = 400) -> None:
    """run_once until no job is queued or running (retries come due a millisecond later)."""
    store = JobStore(catalog)
    for _ in range(rounds):
        await runner.run_once()
        if not any(state in ("queued", "running") for _, state in store.counts()):
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"jobs did not settle: {store.counts()}")


async def test_a_completed_recording_is_delivered_once_signed(
    catalog: Catalog, tmp_path: Path
) -> None:
    verify = docs_verify()
    with webhook_receiver() as receiver:
        settings = _settings(tmp_path, [receiver.url])
        runner, _ = _runner(catalog, settings, tmp_path)
        rec = _finished(catalog)
        assert rec.uid is not None
        await runner.enqueue(KIND, rec.uid, {"uid": rec.uid})
        await runner.enqueue(KIND, rec.uid, {"uid": rec.uid})  # the observer and a catch-up
        await _settle(runner, catalog)
        await runner.stop()
        (got,) = receiver.received
    assert verify(SECRET, got.headers["Callrec-Signature"], got.body)
    assert not verify("another secret", got.headers["Callrec-Signature"], got.body)
    assert not verify(SECRET, got.headers["Callrec-Signature"], got.body + b" ")
    body = json.loads(got.body)
    assert body["type"] == "recording.completed"
    assert got.headers["Callrec-Event-Id"] == body["id"]
    assert got.headers["Callrec-Event-Type"] == "recording.completed"
    assert got.headers["Content-Type"] == "application/json"
    data = body["data"]["recording"]
    assert data["id"] == rec.id and data["uid"] == rec.uid
    assert data["sha256"] == rec.sha256 and data["duration"] == rec.duration
    assert data["remote_number"] == rec.remote_number
    assert data["download_url"] == f"https://rec.example.com/api/v1/recordings/{rec.id}/download"
    store = JobStore(catalog)
    (job,) = store.list_jobs(kind="webhook:*")
    assert job.state == DONE and job.key == body["id"]
    (attempt,) = store.attempts(job.id)
    assert attempt.outcome == "done" and attempt.detail.startswith("HTTP 200 in ")
    assert attempt.detail.endswith(": ok")


async def test_500s_are_retried_until_the_endpoint_takes_it(
    catalog: Catalog, tmp_path: Path
) -> None:
    with webhook_receiver(script=[500, 503]) as receiver:
        settings = _settings(tmp_path, [receiver.url])
        runner, _ = _runner(catalog, settings, tmp_path)
        rec = _finished(catalog)
        assert webhooks.emit(catalog, settings, webhooks.DELETED, rec, reason="test") == 1
        await _settle(runner, catalog)
        await runner.stop()
        ids = {r.headers["Callrec-Event-Id"] for r in receiver.received}
        assert len(receiver.received) == 3 and len(ids) == 1  # the same event, three times
    store = JobStore(catalog)
    (job,) = store.list_jobs(kind="webhook:*")
    history = store.attempts(job.id)
    assert [a.outcome for a in history] == ["retry", "retry", "done"]
    assert history[0].detail.startswith("HTTP 500 in ") and "receiver says no" in history[0].detail
    assert history[1].detail.startswith("HTTP 503 in ")
    assert job.state == DONE


async def test_a_timeout_is_retried(catalog: Catalog, tmp_path: Path) -> None:
    with webhook_receiver(script=["hold"]) as receiver:
        settings = _settings(tmp_path, [receiver.url], webhook_timeout=0.5)
        runner, _ = _runner(catalog, settings, tmp_path)
        rec = _finished(catalog)
        webhooks.emit(catalog, settings, webhooks.HELD, rec, id="hold-1", reason="lawsuit")
        await _settle(runner, catalog)
        await runner.stop()
        assert len(receiver.received) == 2
        body = json.loads(receiver.received[1].body)
    assert body["id"] == "hold-1" and body["data"]["reason"] == "lawsuit"
    store = JobStore(catalog)
    (job,) = store.list_jobs(kind="webhook:*")
    history = store.attempts(job.id)
    assert [a.outcome for a in history] == ["retry", "done"]
    assert history[0].detail == "no answer within 0.5 s"


async def test_the_timeout_bounds_the_whole_delivery_not_each_read(
    catalog: Catalog, tmp_path: Path
) -> None:
    # Each byte of the first answer comes within 0.1 s, the whole answer takes about 4 s.
    with webhook_receiver(script=["drip"]) as receiver:
        settings = _settings(tmp_path, [receiver.url], webhook_timeout=0.5)
        runner, _ = _runner(catalog, settings, tmp_path)
        webhooks.emit(catalog, settings, webhooks.DELETED, _finished(catalog), id="drip-1")
        started = time.monotonic()
        await _settle(runner, catalog)
        took = time.monotonic() - started
        await runner.stop()
        assert len(receiver.received) == 2
    store = JobStore(catalog)
    (job,) = store.list_jobs(kind="webhook:*")
    history = store.attempts(job.id)
    assert [a.outcome for a in history] == ["retry", "done"]
    assert history[0].detail == "no answer within 0.5 s"
    assert took < 3.5, took


async def test_a_delivery_is_dead_after_its_retries_and_visible(
    catalog: Catalog, tmp_path: Path
) -> None:
    with webhook_receiver(default=500) as receiver:
        settings = _settings(tmp_path, [receiver.url])
        runner, _ = _runner(catalog, settings, tmp_path)
        webhooks.emit(catalog, settings, webhooks.DELETED, _finished(catalog))
        await _settle(runner, catalog)
        await runner.stop()
        assert len(receiver.received) == QUICK.max_attempts
    store = JobStore(catalog)
    (job,) = store.list_jobs(state="dead")
    assert job.last_error is not None and job.last_error.startswith("HTTP 500")


async def test_one_slow_endpoint_does_not_delay_another(catalog: Catalog, tmp_path: Path) -> None:
    with (
        webhook_receiver(script=["hold"] * 10) as slow,
        webhook_receiver() as fast,
    ):
        settings = _settings(tmp_path, [slow.url, fast.url], webhook_timeout=60)
        runner, _ = _runner(catalog, settings, tmp_path)
        await runner.start()
        try:
            for n in range(6):  # more than the slow URL's concurrency
                webhooks.emit(catalog, settings, webhooks.DELETED, _finished(catalog, n))
            await asyncio.to_thread(fast.wait_requests, 6)
            # Every event reached the fast endpoint while the slow one still holds its first.
            assert len(slow.received) == webhooks.CONCURRENCY
            assert not slow.released.is_set()
            slow.released.set()
            await asyncio.to_thread(slow.wait_requests, 6)
        finally:
            slow.released.set()
            await runner.stop()


async def test_emitting_an_event_twice_queues_it_once(catalog: Catalog, tmp_path: Path) -> None:
    settings = _settings(tmp_path, ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"])
    rec = _finished(catalog)
    assert webhooks.emit(catalog, settings, webhooks.DELETED, rec) == 2
    assert webhooks.emit(catalog, settings, webhooks.DELETED, rec) == 0
    assert webhooks.emit(catalog, settings, webhooks.HELD, rec, id="h1") == 2
    assert webhooks.emit(catalog, settings, webhooks.HELD, rec, id="h2") == 2
    without = server_settings(tmp_path)
    assert webhooks.emit(catalog, without, webhooks.DELETED, rec) == 0
    kinds = {job.kind for job in JobStore(catalog).list_jobs()}
    assert kinds == {webhooks.kind_for(u) for u in settings.webhook_url}
    with pytest.raises(ValueError, match="unknown webhook event"):
        webhooks.emit(catalog, settings, "recording.moved", rec)


def test_signatures_are_checked_on_time_and_bytes() -> None:
    body = b'{"id":"e1"}'
    now = int(time.time())
    header = webhooks.sign(SECRET, now, body)
    expected = hashlib.sha256  # the scheme: HMAC-SHA256 over "<t>.<body>"
    assert header.startswith(f"t={now},v1=") and len(header.split("v1=")[1]) == 64
    assert expected is not None
    assert webhooks.verify(SECRET, header, body)
    assert docs_verify()(SECRET, header, body)
    old = webhooks.sign(SECRET, now - 301, body)
    assert not webhooks.verify(SECRET, old, body)
    assert not docs_verify()(SECRET, old, body)
    assert not webhooks.verify(SECRET, "v1=abc", body)
    assert not webhooks.verify(SECRET, f"t={now}", body)


def test_public_url_comes_from_the_settings(tmp_path: Path) -> None:
    s = server_settings(tmp_path, web_host="127.0.0.1", web_port=8443, web_tls_self_signed=True)
    assert webhooks.public_url(s) == "https://127.0.0.1:8443"
    s = server_settings(tmp_path, web_public_url="https://rec.example.com/")
    assert webhooks.public_url(s) == "https://rec.example.com"


def test_webhook_settings_are_checked(tmp_path: Path) -> None:
    from callrec.exceptions import ConfigError

    with pytest.raises(ConfigError, match="needs webhook_secret"):
        server_settings(tmp_path, webhook_url=("https://x.example/",))
    with pytest.raises(ConfigError, match="not an http"):
        server_settings(tmp_path, webhook_url=("ftp://x.example/",), webhook_secret="s")
    with pytest.raises(ConfigError, match="webhook_timeout must be > 0"):
        server_settings(tmp_path, webhook_timeout=0)
    with pytest.raises(ConfigError, match="shorter than job_keep_days"):
        server_settings(tmp_path, job_keep_days=7, job_catch_up_hours=168)


async def test_a_recording_not_yet_catalogued_waits(catalog: Catalog, tmp_path: Path) -> None:
    with webhook_receiver() as receiver:
        settings = _settings(tmp_path, [receiver.url])
        runner, _ = _runner(catalog, settings, tmp_path)
        uid = "f" * 32
        await runner.enqueue(KIND, uid, {"uid": uid})
        await runner.run_once()
        job = JobStore(catalog).find(KIND, uid)
        assert job is not None and job.state == "queued" and job.attempts == 0
        assert "not catalogued as finished yet" in JobStore(catalog).attempts(job.id)[0].detail
        await runner.stop()
        assert receiver.received == []


async def test_catch_up_enqueues_recordings_finished_while_no_runner_ran(
    catalog: Catalog, tmp_path: Path
) -> None:
    with webhook_receiver() as receiver:
        settings = _settings(tmp_path, [receiver.url])
        runner, completion = _runner(catalog, settings, tmp_path)
        recs = [_finished(catalog, n) for n in range(3)]
        await runner.enqueue(KIND, recs[0].uid or "", {"uid": recs[0].uid})
        assert await completion.catch_up() == "2 recordings caught up"
        assert await completion.catch_up() == "0 recordings caught up"
        await _settle(runner, catalog)
        await runner.stop()
        assert len(receiver.received) == 3
    got = sorted(json.loads(r.body)["data"]["recording"]["id"] for r in receiver.received)
    assert got == sorted(r.id for r in recs)


async def test_a_redirect_is_not_followed(catalog: Catalog, tmp_path: Path) -> None:
    with webhook_receiver(script=["redirect"]) as receiver:
        settings = _settings(tmp_path, [receiver.url])
        runner, _ = _runner(catalog, settings, tmp_path)
        webhooks.emit(catalog, settings, webhooks.DELETED, _finished(catalog))
        await _settle(runner, catalog)
        await runner.stop()
        requests = len(receiver.received)
    assert requests == 2  # the redirected try, then the retry: never the Location
    (job,) = JobStore(catalog).list_jobs(kind="webhook:*")
    assert JobStore(catalog).attempts(job.id)[0].detail.startswith("HTTP 307 in ")
