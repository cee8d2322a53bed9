"""Retention sweeps, disk quota and legal holds against the catalogue and real files, on
SQLite and PostgreSQL (the ``catalog`` fixture runs each test on both)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from callrec.catalog import Catalog, RetentionPolicy, RetentionRule
from callrec.exceptions import CatalogError, ConfigError, RecordingHeld
from callrec.retention import finish_pending, policy_of, quota_sweep, sweep
from tests.support.retention import NOW, days, files_of, ids, recording, settings_for


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "recordings"
    path.mkdir()
    return path


def test_default_keeps_everything(catalog: Catalog, root: Path) -> None:
    settings = settings_for(root, catalog.url)
    a = recording(catalog, root, 1, age_days=5000)
    result = sweep(catalog, settings, NOW)
    assert (result.deleted, ids(catalog)) == (0, {a})
    assert files_of(root, 1) == ["2026/rec_1.wav", "2026/rec_1.wav.json"]
    assert catalog.tombstones() == []


def test_default_days_deletes_older_with_tombstone_and_audit(catalog: Catalog, root: Path) -> None:
    settings = settings_for(root, catalog.url, retention_days=90)
    old = recording(catalog, root, 1, age_days=91, size=500, companion=True)
    new = recording(catalog, root, 2, age_days=89)
    before = catalog.get(old)
    assert before is not None
    result = sweep(catalog, settings, NOW)
    assert (result.deleted, result.bytes, result.files_removed) == (1, 500, 3)
    assert result.by_reason == {"default 90 days": 1}
    assert ids(catalog) == {new}
    assert files_of(root, 1) == []
    assert files_of(root, 2) == ["2026/rec_2.wav", "2026/rec_2.wav.json"]
    (tomb,) = catalog.tombstones()
    assert (tomb.recording_id, tomb.path, tomb.sha256) == (old, before.path, before.sha256)
    assert (tomb.local_number, tomb.remote_number) == (before.local_number, before.remote_number)
    assert (tomb.start_time, tomb.deleted_by, tomb.reason) == (
        before.start_time,
        "retention",
        "default 90 days",
    )
    assert tomb.files == ("2026/rec_1_mix.wav",)
    assert tomb.files_removed_at is not None
    (entry,) = catalog.audit_entries(recording_id=old, limit=10)
    assert (entry.action, entry.username) == ("delete", "retention")
    assert entry.detail["reason"] == "default 90 days"
    assert entry.detail["sha256"] == before.sha256
    assert entry.detail["tombstone"] == tomb.id
    # Idempotent: a second run finds nothing more.
    assert sweep(catalog, settings, NOW).deleted == 0


@pytest.mark.parametrize(
    ("rule", "matching", "other"),
    [
        ("source=sip:3650", {"source": "sip"}, {"source": "server"}),
        ("source=phone:3650", {"source": "server"}, {"source": "usb"}),
        ("source=usb:3650", {"source": "usb"}, {"source": "sip"}),
        ("extension=3001:3650", {"local_number": "3001"}, {"local_number": "3002"}),
        ("extension=3001:3650", {"remote_number": "3001"}, {"remote_number": "3002"}),
        ("device=0C:38:3E:00:00:01:3650", None, None),
        ("tag=complaint:2555", {"tags": ("complaint",)}, {"tags": ("training",)}),
    ],
)
def test_each_override_kind_protects_what_it_matches(
    catalog: Catalog,
    root: Path,
    rule: str,
    matching: dict[str, object] | None,
    other: dict[str, object] | None,
) -> None:
    if matching is None:  # the device rule: spelt with colons, matched in any case
        rule = "device=0C383E000001:3650"
        matching, other = {"device": "0c383e000001"}, {"device": "0c383e000002"}
    assert other is not None
    settings = settings_for(root, catalog.url, retention_days=90, retention_rules=(rule,))
    kept = recording(catalog, root, 1, age_days=200, **matching)  # type: ignore[arg-type]
    gone = recording(catalog, root, 2, age_days=200, **other)  # type: ignore[arg-type]
    ancient = recording(catalog, root, 3, age_days=4000, **matching)  # type: ignore[arg-type]
    result = sweep(catalog, settings, NOW)
    assert ids(catalog) == {kept}
    label = RetentionRule.parse(rule).label
    assert result.by_reason == {"default 90 days": 1, label: 1}
    reasons = {t.recording_id: t.reason for t in catalog.tombstones()}
    assert reasons == {gone: "default 90 days", ancient: label}


def test_a_rule_may_be_shorter_than_the_default(catalog: Catalog, root: Path) -> None:
    # Default forever; spam goes after 7 days.
    settings = settings_for(root, catalog.url, retention_rules=("tag=spam:7",))
    spam = recording(catalog, root, 1, age_days=8, tags=("spam",))
    kept = recording(catalog, root, 2, age_days=8000)
    fresh_spam = recording(catalog, root, 3, age_days=6, tags=("spam",))
    sweep(catalog, settings, NOW)
    assert ids(catalog) == {kept, fresh_spam}
    assert spam not in ids(catalog)


def test_longest_matching_rule_wins_whatever_the_order(catalog: Catalog, root: Path) -> None:
    for n, rules in enumerate(
        [("extension=201:3650", "source=usb:30"), ("source=usb:30", "extension=201:3650")]
    ):
        settings = settings_for(root, catalog.url, retention_days=90, retention_rules=rules)
        # A USB import of extension 201, 100 days old: usb says 30, 201 says 10 years.
        rec = recording(catalog, root, 10 + n, age_days=100, source="usb", local_number="201")
        other_usb = recording(catalog, root, 20 + n, age_days=40, source="usb", local_number="555")
        sweep(catalog, settings, NOW)
        assert rec in ids(catalog)
        assert other_usb not in ids(catalog)
    # days = 0 is forever, and wins over any other matching rule.
    forever = settings_for(
        root, catalog.url, retention_days=1, retention_rules=("tag=keep:0", "source=server:2")
    )
    kept = recording(catalog, root, 30, age_days=9000, tags=("keep",))
    sweep(catalog, forever, NOW)
    assert kept in ids(catalog)


def test_policy_decide_and_bad_rules() -> None:
    policy = RetentionPolicy(
        default_days=90,
        rules=(RetentionRule.parse("extension=3001:3650"), RetentionRule.parse("tag=x:7")),
    )
    assert policy.decide(source="sip", local="3001", remote="", device="", tags=["x"]) == (
        3650,
        "extension=3001 3650 days",
    )
    assert policy.decide(source="sip", local="1", remote="", device="", tags=()) == (
        90,
        "default 90 days",
    )
    with pytest.raises(CatalogError, match="must look like kind=value:days"):
        RetentionRule.parse("extension 3001")
    with pytest.raises(CatalogError, match="kind must be one of source, extension"):
        RetentionRule.parse("colour=red:3")
    with pytest.raises(CatalogError, match="source must be phone, sip or usb"):
        RetentionRule.parse("source=fax:3")
    with pytest.raises(ConfigError, match="retention_rules: retention rule 'x' must look"):
        settings_for(Path("r"), "sqlite://", retention_rules=("x",))
    with pytest.raises(ConfigError, match="disk_quota must be bytes"):
        settings_for(Path("r"), "sqlite://", disk_quota="lots")


def test_before_deletes_every_unheld_older_recording(catalog: Catalog, root: Path) -> None:
    # The policy would keep them all: --before does not ask it.
    settings = settings_for(root, catalog.url, retention_rules=("extension=201:0",))
    a = recording(catalog, root, 1, age_days=30)
    b = recording(catalog, root, 2, age_days=20)
    c = recording(catalog, root, 3, age_days=10)
    held = recording(catalog, root, 4, age_days=40)
    catalog.add_hold("recording", recording_ids=[held], reason="case 7", by="anna")
    result = sweep(catalog, settings, NOW, before=days(15), by="cli:root")
    assert result.deleted == 2
    assert ids(catalog) == {c, held}
    reasons = {(t.recording_id, t.deleted_by, t.reason) for t in catalog.tombstones()}
    assert reasons == {
        (a, "cli:root", "before 2026-11-16T12:00:00+00:00"),
        (b, "cli:root", "before 2026-11-16T12:00:00+00:00"),
    }


def test_dry_run_changes_nothing(catalog: Catalog, root: Path) -> None:
    settings = settings_for(root, catalog.url, retention_days=30)
    old = recording(catalog, root, 1, age_days=31)
    recording(catalog, root, 2, age_days=29)
    result = sweep(catalog, settings, NOW, dry_run=True)
    assert (result.dry_run, result.deleted) == (True, 1)
    assert [(r.id, label) for r, label in result.preview] == [(old, "default 30 days")]
    assert len(ids(catalog)) == 2
    assert files_of(root, 1) == ["2026/rec_1.wav", "2026/rec_1.wav.json"]
    assert catalog.tombstones() == []
    assert catalog.audit_entries(limit=10) == []
    before = sweep(catalog, settings, NOW, dry_run=True, before=days(0))
    assert before.deleted == 2
    assert len(ids(catalog)) == 2


HOLD_KINDS = ["recording", "search", "number", "tag"]


def _hold(catalog: Catalog, kind: str, rec_id: int) -> int:
    if kind == "recording":
        return catalog.add_hold(kind, recording_ids=[rec_id], reason="case 1", by="anna").id
    if kind == "search":
        return catalog.add_hold(
            kind, recording_ids=[rec_id], query={"q": "3001"}, reason="case 1", by="anna"
        ).id
    if kind == "number":
        return catalog.add_hold(kind, value="3001", reason="case 1", by="anna").id
    return catalog.add_hold(kind, value="Complaint", reason="case 1", by="anna").id


@pytest.mark.parametrize("kind", HOLD_KINDS)
def test_held_recordings_survive_every_delete_path(catalog: Catalog, root: Path, kind: str) -> None:
    settings = settings_for(root, catalog.url, retention_days=1, disk_quota="1")
    held = recording(catalog, root, 1, age_days=100, remote_number="3001", tags=("complaint",))
    free = recording(catalog, root, 2, age_days=50)
    hold_id = _hold(catalog, kind, held)
    rec = catalog.get(held)
    assert rec is not None and catalog.is_held(rec)
    with pytest.raises(
        RecordingHeld,
        match=rf"cannot delete recording {held}: it is under legal hold \(hold {hold_id} ",
    ):
        catalog.delete_recording(held, by="anna")
    assert sweep(catalog, settings, NOW).deleted == 1  # `free`
    assert sweep(catalog, settings, NOW, before=days(0)).deleted == 0
    assert quota_sweep(catalog, settings).deleted == 0
    assert ids(catalog) == {held}
    assert files_of(root, 1) == ["2026/rec_1.wav", "2026/rec_1.wav.json"]
    assert free not in ids(catalog)
    # Released, it goes like any other.
    catalog.release_hold(hold_id, by="anna")
    assert not catalog.is_held(rec)
    assert sweep(catalog, settings, NOW).deleted == 1
    assert ids(catalog) == set()


def test_a_rule_hold_covers_recordings_made_later(catalog: Catalog, root: Path) -> None:
    catalog.add_hold("number", value="3001", reason="litigation", by="anna")
    catalog.add_hold("tag", value="complaint", reason="regulator", by="anna")
    later = recording(catalog, root, 1, age_days=1, local_number="3001")
    tagged_later = recording(catalog, root, 2, age_days=1, tags=("complaint",))
    assert catalog.held_ids([later, tagged_later]) == {later, tagged_later}


def test_holds_list_release_and_bad_holds(catalog: Catalog, root: Path) -> None:
    a = recording(catalog, root, 1, age_days=1)
    hold = catalog.add_hold("recording", recording_ids=[a], reason=" case 9 ", by="anna")
    assert (hold.kind, hold.reason, hold.created_by, hold.recordings) == (
        "recording",
        "case 9",
        "anna",
        1,
    )
    assert [h.id for h in catalog.holds()] == [hold.id]
    released = catalog.release_hold(hold.id, by="bob")
    assert (released.released_by, released.active) == ("bob", False)
    assert catalog.holds() == []
    assert [h.id for h in catalog.holds(include_released=True)] == [hold.id]
    with pytest.raises(CatalogError, match=f"legal hold {hold.id} was already released by bob"):
        catalog.release_hold(hold.id, by="bob")
    with pytest.raises(CatalogError, match="no legal hold 999"):
        catalog.release_hold(999, by="bob")
    with pytest.raises(CatalogError, match="a legal hold needs a reason"):
        catalog.add_hold("number", value="3001", reason=" ", by="anna")
    with pytest.raises(CatalogError, match="cannot hold: no recording 77"):
        catalog.add_hold("recording", recording_ids=[a, 77], reason="x", by="anna")
    with pytest.raises(CatalogError, match="a number hold needs a number"):
        catalog.add_hold("number", value="abc", reason="x", by="anna")


def test_quota_deletes_oldest_first_and_skips_held_and_recording(
    catalog: Catalog, root: Path
) -> None:
    settings = settings_for(root, catalog.url, disk_quota="2500")
    oldest = recording(catalog, root, 1, age_days=40, size=1000)
    held = recording(catalog, root, 2, age_days=30, size=1000)
    live = recording(catalog, root, 3, age_days=25, size=1000, finished=False)
    second = recording(catalog, root, 4, age_days=20, size=1000)
    newest = recording(catalog, root, 5, age_days=10, size=1000)
    catalog.add_hold("recording", recording_ids=[held], reason="case", by="anna")
    # 4000 catalogued bytes (the live row has no size yet) against 2500.
    result = quota_sweep(catalog, settings)
    assert (result.limit, result.deleted, result.freed, result.used) == (2500, 2, 2000, 2000)
    assert ids(catalog) == {held, live, newest}
    assert {t.recording_id for t in catalog.tombstones()} == {oldest, second}
    assert {(t.deleted_by, t.reason) for t in catalog.tombstones()} == {("quota", "quota")}
    assert {e.username for e in catalog.audit_entries(limit=10)} == {"quota"}
    assert quota_sweep(catalog, settings).deleted == 0


def test_quota_as_a_percent_of_the_filesystem(catalog: Catalog, root: Path) -> None:
    from callrec.retention import quota_limit

    settings = settings_for(root, catalog.url, disk_quota="50%")
    import os

    st = os.statvfs(root)
    assert quota_limit(settings) == int(st.f_blocks * st.f_frsize * 0.5)
    assert quota_limit(settings_for(root, catalog.url, disk_quota="2 GiB")) == 2 * 1024**3
    assert quota_limit(settings_for(root, catalog.url)) is None


def test_crash_after_the_catalogue_finishes_on_the_next_run(catalog: Catalog, root: Path) -> None:
    settings = settings_for(root, catalog.url, retention_days=10)
    old = recording(catalog, root, 1, age_days=11, companion=True)
    # What a crash right after the deleting transaction leaves: row gone, files there,
    # the tombstone pending.
    (tomb,) = catalog.retire_expired(policy_of(settings), NOW)
    assert ids(catalog) == set()
    assert catalog.pending_tombstones() == [tomb]
    assert len(files_of(root, 1)) == 3
    result = sweep(catalog, settings, NOW)
    assert (result.deleted, result.finished_pending, result.files_removed) == (0, 1, 3)
    assert files_of(root, 1) == []
    assert catalog.pending_tombstones() == []
    (done,) = catalog.tombstones(recording_id=old)
    assert done.files_removed_at is not None


def test_file_removed_but_row_kept_is_tombstoned_next_run(catalog: Catalog, root: Path) -> None:
    settings = settings_for(root, catalog.url, retention_days=10)
    old = recording(catalog, root, 1, age_days=11)
    # What a delete that removed files first and crashed leaves (or a file removed by hand).
    (root / "2026/rec_1.wav").unlink()
    result = sweep(catalog, settings, NOW)
    assert (result.deleted, result.files_removed) == (1, 1)  # the sidecar
    (tomb,) = catalog.tombstones(recording_id=old)
    assert tomb.files_removed_at is not None
    assert ids(catalog) == set()


def test_finish_pending_after_a_web_delete_crashed(catalog: Catalog, root: Path) -> None:
    settings = settings_for(root, catalog.url)
    rec = recording(catalog, root, 1, age_days=1)
    catalog.delete_recording(rec, by="anna")  # files not removed: the caller "crashed"
    assert finish_pending(catalog, settings) == (1, 2)
    assert files_of(root, 1) == []
    assert catalog.tombstones()[0].deleted_by == "anna"


def test_two_sweeps_at_once_delete_each_recording_once(
    catalog: Catalog, catalog_url: str, root: Path
) -> None:
    settings = settings_for(root, catalog_url, retention_days=10)
    made = {recording(catalog, root, n, age_days=20 + n % 7) for n in range(60)}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        # A catalogue of its own: another process, as far as the database can tell.
        with Catalog(catalog_url) as other:
            try:
                barrier.wait()
                sweep(other, settings, NOW, batch=7)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert ids(catalog) == set()
    tombs = catalog.tombstones(limit=1000)
    assert sorted(t.recording_id for t in tombs) == sorted(made)
    audited = [e.recording_id for e in catalog.audit_entries(limit=1000)]
    assert sorted(audited) == sorted(made)
    assert catalog.pending_tombstones() == []


def test_rule_coverage(catalog: Catalog, root: Path) -> None:
    settings = settings_for(
        root, catalog.url, retention_days=90, retention_rules=("extension=3001:3650", "tag=x:30")
    )
    recording(catalog, root, 1, age_days=100, local_number="3001")
    recording(catalog, root, 2, age_days=100, tags=("x",))
    recording(catalog, root, 3, age_days=100, local_number="3001", tags=("x",))
    recording(catalog, root, 4, age_days=100)
    recording(catalog, root, 5, age_days=10)
    coverage = catalog.rule_coverage(policy_of(settings), NOW)
    assert [(c.label, c.matching, c.expired) for c in coverage] == [
        ("extension=3001 3650 days", 2, 0),
        ("tag=x 30 days", 2, 1),
        ("default 90 days", 2, 1),
    ]


def test_files_that_cannot_be_removed_stay_pending(
    catalog: Catalog, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(root, catalog.url, retention_days=10)
    old = recording(catalog, root, 1, age_days=11)
    sidecar = root / "2026/rec_1.wav.json"
    sidecar.unlink()
    sidecar.mkdir()  # unlink() fails on it, even for root
    sweep(catalog, settings, NOW)
    assert ids(catalog) == set()
    (tomb,) = catalog.pending_tombstones()
    assert tomb.recording_id == old
    assert f"recording {old} (2026/rec_1.wav) deleted but its files could not be removed" in (
        caplog.text
    )
    sidecar.rmdir()
    assert finish_pending(catalog, settings) == (1, 0)
    assert catalog.pending_tombstones() == []
