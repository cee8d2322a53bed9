"""``callrec jobs list|show|retry|run-once`` over a real catalogue, with a real
on_complete_command; ``callrec config show`` hides the webhook secret."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from typer.testing import CliRunner

from callrec.catalog import Catalog
from callrec.cli import app
from tests.support.catalog import finish_values, new_recording


def test_run_once_list_show_retry(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    with Catalog(f"sqlite:///{db}") as catalog:
        catalog.migrate()
        rec_id = catalog.create_recording(new_recording(0, uid="b" * 32))
        catalog.finish_recording(rec_id, **finish_values())
    out = tmp_path / "ran"
    script = tmp_path / "hook.py"
    script.write_text(
        f"import os, sys\nopen({str(out)!r}, 'w').write(os.environ['CALLREC_ID'])\n"
        "sys.exit(0 if os.environ.get('OK') else 4)\n"
    )
    env = {
        "CALLREC_DATABASE_URL": f"sqlite:///{db}",
        "CALLREC_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "CALLREC_ON_COMPLETE_COMMAND": f"{sys.executable} {script}",
    }
    runner = CliRunner()
    result = runner.invoke(app, ["jobs", "run-once"], env=env)
    assert result.exit_code == 0, result.output
    assert "3 jobs run" in result.output  # the completion, its command, the periodic catch-up
    assert out.read_text() == str(rec_id)
    listed = runner.invoke(app, ["jobs", "list", "--json"], env=env)
    jobs = {j["kind"]: j for j in json.loads(listed.output)}
    assert jobs["recording.completed"]["state"] == "done"
    failed = jobs["on_complete_command"]
    assert failed["state"] == "queued" and failed["last_error"] == "exit status 4"
    shown = runner.invoke(app, ["jobs", "show", str(failed["id"])], env=env)
    assert shown.exit_code == 0 and "exit status 4" in shown.output
    retried = runner.invoke(app, ["jobs", "retry", str(failed["id"])], env=env)
    assert retried.exit_code == 0 and "queued again" in retried.output
    again = runner.invoke(app, ["jobs", "run-once"], env={**env, "OK": "1"})
    assert "1 jobs run" in again.output
    done = runner.invoke(app, ["jobs", "list", "--json", "--state", "done"], env=env)
    assert len(json.loads(done.output)) == 3
    assert runner.invoke(app, ["jobs", "retry", "9999"], env=env).exit_code == 1
    assert runner.invoke(app, ["jobs", "list", "--state", "lost"], env=env).exit_code == 2


def test_config_show_hides_the_webhook_secret() -> None:
    env = {"CALLREC_WEBHOOK_URL": "https://x.example/h", "CALLREC_WEBHOOK_SECRET": "s3cr3t"}
    result = CliRunner().invoke(app, ["config", "show", "--json"], env=env)
    data = json.loads(result.output)
    assert data["webhook_secret"] == "***" and data["webhook_url"] == ["https://x.example/h"]
    assert "s3cr3t" not in CliRunner().invoke(app, ["config", "show"], env=env).output
