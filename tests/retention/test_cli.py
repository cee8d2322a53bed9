"""``callrec hold``, ``callrec retention show|run`` and ``callrec recordings delete`` on
SQLite and PostgreSQL, against real files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callrec.catalog import Catalog
from callrec.cli import app
from tests.support.retention import files_of, ids, recording

#: The CLI sweeps at the real "now": ages are counted from it.
NOW = datetime.now(UTC)


@pytest.fixture
def env(catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Catalog, Path]:
    root = tmp_path / "recordings"
    root.mkdir()
    monkeypatch.setenv("CALLREC_DATABASE_URL", catalog.url.replace("***", ""))
    monkeypatch.setenv("CALLREC_RECORDINGS_DIR", str(root))
    monkeypatch.delenv("CALLREC_CONFIG", raising=False)
    return catalog, root


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), input=stdin)
    return result.exit_code, result.output


def _rec(catalog: Catalog, root: Path, n: int, age: float, **kw: object) -> int:
    from tests.support import retention

    # Aged from the real now, not the sweep tests' fixed one.
    shift = (NOW - retention.NOW).total_seconds() / 86400
    return recording(catalog, root, n, age_days=age - shift, **kw)  # type: ignore[arg-type]


def test_hold_commands_and_every_cli_delete_path(env: tuple[Catalog, Path]) -> None:
    catalog, root = env
    a = _rec(catalog, root, 1, 100, remote_number="3001")
    b = _rec(catalog, root, 2, 100, tags=("complaint",))
    c = _rec(catalog, root, 3, 100)
    d = _rec(catalog, root, 4, 100)
    code, out = run("hold", "add", str(c), "--reason", "case 44")
    assert code == 0 and "legal hold 1 set on 1 recording" in out
    code, out = run("hold", "add", "--number", "3001", "--reason", "litigation")
    assert code == 0 and "number 3001" in out
    code, out = run("hold", "add", "--tag", "Complaint", "--reason", "regulator")
    assert code == 0 and "tag complaint" in out
    code, out = run("hold", "add", "--tag", "x")
    assert code == 2 and "--reason is required" in out
    code, out = run("hold", "add", "--reason", "x")
    assert code == 2 and "give recording ids, or --number, or --tag" in out
    code, out = run("hold", "list", "--json")
    assert [h["kind"] for h in json.loads(out)] == ["tag", "number", "recording"]

    # recordings delete: held ones refused, the others go.
    code, out = run("recordings", "delete", str(a), str(b), str(c), str(d), "--yes")
    assert code == 1
    for held in (a, b, c):
        assert f"cannot delete recording {held}: it is under legal hold" in out.replace("\n", " ")
    assert f"deleted recording {d} (2 files)" in out
    assert ids(catalog) == {a, b, c}
    assert files_of(root, 4) == []
    # retention run --before: everything older, unless held.
    code, out = run("retention", "run", "--before", f"{NOW + timedelta(days=1):%Y-%m-%d}", "--yes")
    assert code == 0 and "deleted 0 recordings" in out
    assert ids(catalog) == {a, b, c}

    code, out = run("hold", "remove", "1")
    assert code == 0 and "legal hold 1 released" in out
    code, out = run("hold", "remove", "1")
    assert code == 1 and "already released" in out
    code, out = run("hold", "list", "--all", "--json")
    assert next(h for h in json.loads(out) if h["id"] == 1)["released_by"].startswith("cli")
    code, out = run("recordings", "delete", str(c), "--yes")
    assert code == 0 and ids(catalog) == {a, b}

    audit = [(e.action, e.username) for e in catalog.audit_entries(limit=50)]
    assert audit.count(("hold_add", audit[0][1])) == 3
    assert ("hold_remove", audit[0][1]) in audit
    deletes = [e for e in catalog.audit_entries(limit=50) if e.action == "delete"]
    assert sorted(e.recording_id for e in deletes) == sorted([c, d])
    assert {t.recording_id for t in catalog.tombstones()} == {c, d}


def test_retention_run_dry_run_before_and_policy(
    env: tuple[Catalog, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog, root = env
    old = _rec(catalog, root, 1, 40)
    mid = _rec(catalog, root, 2, 20)
    new = _rec(catalog, root, 3, 5)
    monkeypatch.setenv("CALLREC_RETENTION_DAYS", "30")
    code, out = run("retention", "run", "--dry-run", "--json")
    data = json.loads(out)
    assert code == 0 and (data["dry_run"], data["deleted"]) == (True, 1)
    assert data["preview"][0]["id"] == old and data["preview"][0]["rule"] == "default 30 days"
    assert ids(catalog) == {old, mid, new}

    code, out = run("retention", "run")
    assert code == 0 and "deleted 1 recordings" in out and "1 by default 30 days" in out
    assert ids(catalog) == {mid, new}

    cutoff = f"{NOW - timedelta(days=10):%Y-%m-%d}"
    code, out = run("retention", "run", "--before", cutoff, stdin="n\n")
    assert code == 1 and "Delete 1 recordings that started before" in out
    assert ids(catalog) == {mid, new}
    code, out = run("retention", "run", "--before", cutoff, stdin="y\n")
    assert code == 0 and "deleted 1 recordings" in out
    assert ids(catalog) == {new}
    (tomb, _) = catalog.tombstones()
    assert tomb.recording_id == mid and tomb.deleted_by.startswith("cli")
    assert tomb.reason.startswith("before ")


def test_retention_show_from_a_toml_file(env: tuple[Catalog, Path], tmp_path: Path) -> None:
    catalog, root = env
    _rec(catalog, root, 1, 100, local_number="3001")
    _rec(catalog, root, 2, 100, tags=("complaint",))
    _rec(catalog, root, 3, 100, size=4000)
    config = tmp_path / "callrec.toml"
    config.write_text(
        'retention_days = 90\ndisk_quota = "10 kB"\n\n'
        '[[retention_rules]]\nextension = "3001"\ndays = 3650\n\n'
        '[[retention_rules]]\ntag = "complaint"\ndays = 2555\n'
    )
    code, out = run("retention", "show", "--config", str(config), "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["rules"] == ["extension=3001:3650", "tag=complaint:2555"]
    assert data["coverage"] == [
        {"rule": "extension=3001 3650 days", "recordings": 1, "expired_now": 0},
        {"rule": "tag=complaint 2555 days", "recordings": 1, "expired_now": 0},
        {"rule": "default 90 days", "recordings": 1, "expired_now": 1},
    ]
    assert data["disk_quota"] == {"setting": "10 kB", "limit": 10000, "used": 6000}
    code, out = run("retention", "show", "--config", str(config))
    assert code == 0 and "longest retention" in out and "disk quota: 10 kB = 10,000 bytes" in out
