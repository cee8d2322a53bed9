"""``callrec archive run|show`` and ``callrec recordings export`` over real recordings
(issue 16, part 4)."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callrec.catalog import Catalog
from callrec.cli import app
from callrec.media.wav import sha256_file
from callrec.service import Service
from tests.support.settings import server_settings
from tests.support.web import CALLS, make_call


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[dict[str, str], dict[str, int]]:
    settings = server_settings(tmp_path)

    async def fill() -> dict[str, int]:
        srv = Service(settings)
        await srv.start()
        try:
            return {name: await make_call(srv, **CALLS[name]) for name in ("alice", "bob")}
        finally:
            await srv.stop()

    ids = asyncio.run(fill())
    env = {
        "CALLREC_DATABASE_URL": settings.database_url,
        "CALLREC_RECORDINGS_DIR": str(settings.recordings_dir),
    }
    return env, ids


def test_archive_run_show_and_export(
    recorded: tuple[dict[str, str], dict[str, int]], tmp_path: Path
) -> None:
    env, ids = recorded
    runner = CliRunner()
    off = runner.invoke(app, ["archive", "run"], env=env)
    assert off.exit_code == 2 and "archive_format" in off.output

    dry = runner.invoke(app, ["archive", "run", "--dry-run", "--format", "flac"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "would archive 0 recordings" in dry.output  # younger than 30 days
    dry = runner.invoke(
        app, ["archive", "run", "--dry-run", "--format", "opus", "--ids", str(ids["bob"])], env=env
    )
    assert f"#{ids['bob']} would:" in dry.output and "would archive 1" in dry.output

    policy = {**env, "CALLREC_ARCHIVE_FORMAT": "flac", "CALLREC_ARCHIVE_AFTER_DAYS": "0"}
    done = runner.invoke(app, ["archive", "run", "--json"], env=policy)
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert sorted(o["id"] for o in report["outcomes"]) == sorted(ids.values())
    assert {o["result"] for o in report["outcomes"]} == {"archived"}
    assert report["saved_bytes"] > 0

    shown = json.loads(runner.invoke(app, ["archive", "show", "--json"], env=policy).output)
    assert shown["formats"] == {"flac": 2} and shown["states"] == {"done": 2}
    assert shown["saved_bytes"] == report["saved_bytes"]
    table = runner.invoke(app, ["archive", "show"], env=policy)
    assert "flac after 0 days" in table.output and "2 archived as flac" in table.output

    # Export copies the archives, under their own names, and lists them.
    out = tmp_path / "export"
    exported = runner.invoke(app, ["recordings", "export", "--to", str(out)], env=env)
    assert exported.exit_code == 0, exported.output
    with Catalog(env["CALLREC_DATABASE_URL"]) as catalog:
        for rec_id in ids.values():
            rec = catalog.get(rec_id)
            assert rec is not None and rec.path.endswith(".flac")
            assert sha256_file(out / rec.path) == rec.sha256
    with (out / "index.csv").open(encoding="utf-8") as fh:
        assert all(row["path"].endswith(".flac") for row in csv.DictReader(fh))
