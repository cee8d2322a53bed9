"""``recording.deleted`` and ``recording.held`` from every delete and hold path outside the
web (the retention sweep, ``--before``, the quota, ``callrec recordings delete``, ``callrec
retention run --before``, ``callrec hold add`` on ids, a number and a tag), on SQLite and
PostgreSQL, delivered to a real HTTP receiver and checked with the docs' signature code:
exactly one event per recording, and none from a transaction that rolls back (the outbox
rows are written in the delete's or the hold's own transaction).
(The web's paths: tests/web/test_hold_events.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection
from typer.testing import CliRunner

from callrec.catalog import Catalog, HoldInfo, JobStore
from callrec.catalog.hooks import Recorded
from callrec.cli import app
from callrec.config import Settings
from callrec.jobs import JobRunner, RetryPolicy, webhooks
from callrec.jobs import events as events_module
from callrec.jobs.events import (
    DELETED,
    DELETED_FIELDS,
    HELD,
    WebhookEvents,
    event_id,
    held_event_id,
)
from callrec.retention import policy_of, quota_sweep, sweep
from tests.jobs.test_webhooks import docs_verify
from tests.support import retention
from tests.support.receiver import Receiver, webhook_receiver
from tests.support.retention import recording

SECRET = "test secret"
QUICK = RetryPolicy(max_attempts=5, max_age=timedelta(hours=1), first=0.001, cap=0.002)


def _settings(root: Path, catalog: Catalog, url: str, **values: Any) -> Settings:
    return dataclasses.replace(
        Settings(recordings_dir=root, database_url=catalog.url.replace("***", "")),
        webhook_url=(url,),
        webhook_secret=SECRET,
        web_public_url="https://rec.example.com",
        **values,
    )


def _deliver(catalog: Catalog, settings: Settings) -> None:
    """Run the webhook deliveries until none is queued or running."""
    runner = JobRunner(JobStore(catalog), poll_interval=0.05)
    for kind in webhooks.webhook_kinds(settings, retry=QUICK, catalog=catalog):
        runner.register(kind)
    store = JobStore(catalog)

    async def settle() -> None:
        for _ in range(400):
            await runner.run_once()
            if not any(s in ("queued", "running") for _, s in store.counts()):
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"jobs did not settle: {store.counts()}")

    asyncio.run(settle())


def _events(receiver: Receiver) -> list[dict[str, Any]]:
    """The bodies received, each checked: signed (the docs' code), its headers naming it."""
    verify = docs_verify()
    out = []
    for got in receiver.received:
        assert verify(SECRET, got.headers["Callrec-Signature"], got.body)
        body = json.loads(got.body)
        assert got.headers["Callrec-Event-Id"] == body["id"]
        assert got.headers["Callrec-Event-Type"] == body["type"]
        out.append(body)
    return out


def _by_recording(events: list[dict[str, Any]], kind: str) -> dict[int, dict[str, Any]]:
    """Events of ``kind`` by recording id; fails if one recording got two."""
    found: dict[int, dict[str, Any]] = {}
    for e in events:
        if e["type"] == kind:
            rec_id = e["data"]["recording"]["id"]
            assert rec_id not in found, f"two {kind} events for recording {rec_id}"
            found[rec_id] = e
    return found


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "recordings"
    path.mkdir()
    return path


def test_the_retention_sweep_sends_one_deleted_event_per_recording(
    catalog: Catalog, root: Path
) -> None:
    old = [recording(catalog, root, n, age_days=100, remote_number="0301234567") for n in (1, 2, 3)]
    kept = recording(catalog, root, 4, age_days=10)
    held = recording(catalog, root, 5, age_days=100)
    catalog.add_hold("recording", recording_ids=[held], reason="case", by="admin")
    infos = {i: catalog.get(i) for i in old}
    with webhook_receiver() as receiver:
        settings = _settings(root, catalog, receiver.url, retention_days=90)
        result = sweep(catalog, settings, retention.NOW, batch=2)
        assert result.deleted == 3
        _deliver(catalog, settings)
        # Once more: nothing new is deleted, nothing new is sent.
        assert sweep(catalog, settings, retention.NOW).deleted == 0
        _deliver(catalog, settings)
        events = _by_recording(_events(receiver), DELETED)
    assert sorted(events) == sorted(old)
    assert kept not in events and held not in events
    tombs = {t.recording_id: t for t in catalog.tombstones()}
    for rec_id, event in events.items():
        info = infos[rec_id]
        assert info is not None
        data = event["data"]
        rec = data["recording"]
        assert event["id"] == event_id(DELETED, info)
        assert (rec["uid"], rec["sha256"], rec["path"], rec["remote_number"]) == (
            info.uid,
            info.sha256,
            info.path,
            "0301234567",
        )
        assert datetime.fromisoformat(rec["start_time"]) == info.start_time
        assert (rec["id"], rec["size_bytes"], rec["source"]) == (
            rec_id,
            info.size_bytes,
            info.source,
        )
        # What the tombstone keeps; no download URL.
        assert sorted(rec) == sorted(DELETED_FIELDS)
        tomb = tombs[rec_id]
        assert (data["reason"], data["deleted_by"], data["tombstone"]) == (
            tomb.reason,
            "retention",
            tomb.id,
        )
        assert data["reason"] == "default 90 days"
        assert datetime.fromisoformat(event["created"]) == tomb.deleted_at


def test_before_and_the_quota_send_deleted_events(catalog: Catalog, root: Path) -> None:
    a = recording(catalog, root, 1, age_days=50, size=1000)
    b = recording(catalog, root, 2, age_days=40, size=1000)
    c = recording(catalog, root, 3, age_days=30, size=1000)
    d = recording(catalog, root, 4, age_days=1, size=1000)
    with webhook_receiver() as receiver:
        settings = _settings(root, catalog, receiver.url, disk_quota="2500")
        before = retention.NOW - timedelta(days=45)
        assert sweep(catalog, settings, retention.NOW, before=before, by="cli:ops").deleted == 1
        assert quota_sweep(catalog, settings).deleted == 1
        _deliver(catalog, settings)
        events = _by_recording(_events(receiver), DELETED)
    assert sorted(events) == [a, b]
    assert events[a]["data"]["deleted_by"] == "cli:ops"
    assert events[a]["data"]["reason"].startswith("before ")
    assert (events[b]["data"]["deleted_by"], events[b]["data"]["reason"]) == ("quota", "quota")
    assert catalog.get(c) is not None and catalog.get(d) is not None


class _Failing:
    """A hook that queues the events, then fails: the transaction must take them back."""

    def __init__(self, inner: WebhookEvents) -> None:
        self.inner = inner
        self.queued = 0

    def deleted(self, connection: Connection, recordings: Sequence[Recorded], at: datetime) -> int:
        self.queued += self.inner.deleted(connection, recordings, at)
        raise RuntimeError("the disk is full")

    def held(self, connection: Connection, hold: HoldInfo, recordings: Sequence[Recorded]) -> int:
        self.queued += self.inner.held(connection, hold, recordings)
        raise RuntimeError("the disk is full")


def test_a_transaction_that_rolls_back_sends_nothing(catalog: Catalog, root: Path) -> None:
    a = recording(catalog, root, 1, age_days=100)
    b = recording(catalog, root, 2, age_days=100)
    with webhook_receiver() as receiver:
        settings = _settings(root, catalog, receiver.url, retention_days=90)
        failing = _Failing(WebhookEvents(settings))
        with pytest.raises(RuntimeError):
            catalog.retire_expired(policy_of(settings), retention.NOW, events=failing)
        with pytest.raises(RuntimeError):
            catalog.retire_recording(a, by="admin", events=failing)
        with pytest.raises(RuntimeError):
            catalog.add_hold(
                "recording", recording_ids=[a, b], reason="x", by="admin", events=failing
            )
        # The hooks did queue (2 + 1 deletes, 2 holds), and every one was rolled back.
        assert failing.queued == 5
        assert JobStore(catalog).list_jobs(kind="webhook:*") == []
        assert catalog.holds() == [] and catalog.tombstones() == []
        assert {catalog.get(a) is not None, catalog.get(b) is not None} == {True}
        # A delete refused (held) queues nothing either.
        catalog.add_hold("recording", recording_ids=[a], reason="x", by="admin")
        with pytest.raises(Exception, match="under legal hold"):
            catalog.retire_recording(a, by="admin", events=WebhookEvents(settings))
        _deliver(catalog, settings)
        assert receiver.received == []


def test_holds_send_one_held_event_per_recording_newly_held(catalog: Catalog, root: Path) -> None:
    a = recording(catalog, root, 1, age_days=5, remote_number="0301")
    b = recording(catalog, root, 2, age_days=5, remote_number="0301", tags=("fraud",))
    c = recording(catalog, root, 3, age_days=5, tags=("fraud",))
    d = recording(catalog, root, 4, age_days=5)
    with webhook_receiver() as receiver:
        settings = _settings(root, catalog, receiver.url)
        events = WebhookEvents(settings)
        first = catalog.add_hold(
            "number", value="0301", reason="lawsuit 1", by="ann", events=events
        )
        # b is held already (by the number): only c is newly held by the tag.
        second = catalog.add_hold("tag", value="fraud", reason="regulator", by="bob", events=events)
        # a, b, c held already: only d.
        third = catalog.add_hold(
            "recording", recording_ids=[a, b, c, d], reason="all", by="cy", events=events
        )
        # Everything held already: nothing.
        catalog.add_hold(
            "search", recording_ids=[a, d], reason="again", by="cy", events=events, query={"q": "x"}
        )
        _deliver(catalog, settings)
        got = _events(receiver)
    assert all(e["type"] == HELD for e in got)
    by_hold: dict[int, list[int]] = {}
    for e in got:
        by_hold.setdefault(e["data"]["hold"]["id"], []).append(e["data"]["recording"]["id"])
    assert {k: sorted(v) for k, v in by_hold.items()} == {
        first.id: [a, b],
        second.id: [c],
        third.id: [d],
    }
    event = next(e for e in got if e["data"]["recording"]["id"] == c)
    info = catalog.get(c)
    assert info is not None
    assert event["id"] == held_event_id(c, info.uid, second.id)
    assert event["data"]["reason"] == "regulator" and event["data"]["held_by"] == "bob"
    assert event["data"]["hold"] == {"id": second.id, "kind": "tag", "value": "fraud"}
    rec = event["data"]["recording"]
    assert (rec["sha256"], rec["uid"]) == (info.sha256, info.uid)
    assert rec["download_url"] == f"https://rec.example.com/api/v1/recordings/{c}/download"
    assert datetime.fromisoformat(event["created"]) == second.created_at


@pytest.fixture
def cli_env(catalog: Catalog, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLREC_DATABASE_URL", catalog.url.replace("***", ""))
    monkeypatch.setenv("CALLREC_RECORDINGS_DIR", str(root))
    monkeypatch.delenv("CALLREC_CONFIG", raising=False)


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_the_command_line_paths_send_one_event_per_recording(
    catalog: Catalog, root: Path, cli_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    shift = (now - retention.NOW).total_seconds() / 86400
    recs = [
        recording(catalog, root, n, age_days=100 - shift, remote_number=f"04{n}")
        for n in range(1, 8)
    ]
    catalog.add_tag(recs[2], "case")
    with webhook_receiver() as receiver:
        monkeypatch.setenv("CALLREC_WEBHOOK_URL", receiver.url)
        monkeypatch.setenv("CALLREC_WEBHOOK_SECRET", SECRET)
        settings = _settings(root, catalog, receiver.url)
        _cli("hold", "add", str(recs[0]), "--reason", "case 1")
        _cli("hold", "add", "--number", "042", "--reason", "case 2")
        _cli("hold", "add", "--tag", "case", "--reason", "case 3")
        _cli("recordings", "delete", str(recs[3]), str(recs[4]), "--yes")
        _cli("retention", "run", "--before", f"{now + timedelta(days=1):%Y-%m-%d}", "--yes")
        _deliver(catalog, settings)
        got = _events(receiver)
    held = _by_recording(got, HELD)
    deleted = _by_recording(got, DELETED)
    assert sorted(held) == recs[:3]
    assert sorted(deleted) == recs[3:]
    assert {d["data"]["reason"] for r, d in deleted.items() if r in recs[3:5]} == {
        "deleted from the command line"
    }
    assert all(
        d["data"]["reason"].startswith("before ") for r, d in deleted.items() if r in recs[5:]
    )
    assert len(got) == 7


def test_the_event_ids_made_in_bulk_are_uuid5s(catalog: Catalog, root: Path) -> None:
    """The sweep's fast event ids are the very ``uuid5`` ids of :func:`event_id`."""
    rec_id = recording(catalog, root, 1, age_days=1)
    info = catalog.get(rec_id)
    assert info is not None
    made = uuid.uuid5(events_module._NAMESPACE, f"{info.uid or rec_id}:{DELETED}")
    assert event_id(DELETED, info) == str(made)
    assert made.version == 5
    held = uuid.uuid5(events_module._NAMESPACE, f"{info.uid or rec_id}:{HELD}:7")
    assert held_event_id(rec_id, info.uid, 7) == str(held)
    assert held_event_id(rec_id, None, 7) == str(
        uuid.uuid5(events_module._NAMESPACE, f"{rec_id}:{HELD}:7")
    )
