"""``on_complete_command`` with real scripts: the recording's fields in the environment, no
shell, a bounded time, the exit status and the end of the output in the job's history."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from callrec.catalog import Catalog, JobStore
from callrec.config import Settings
from callrec.exceptions import ConfigError
from callrec.jobs import JobRunner, RetryPolicy, command
from callrec.jobs.completion import KIND, Completion
from tests.support.catalog import SHA, finish_values, new_recording
from tests.support.settings import server_settings

QUICK = RetryPolicy(max_attempts=2, max_age=timedelta(hours=1), first=0.001, cap=0.002)


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "on complete.py"  # a space: no shell splits it wrongly
    path.write_text(f"#!{sys.executable}\nimport json, os, sys, time\n{body}\n")
    path.chmod(0o755)
    return path


async def _run(catalog: Catalog, settings: Settings, tmp_path: Path) -> int:
    runner = JobRunner(JobStore(catalog), poll_interval=0.05)
    completion = Completion(runner, catalog, settings, root=tmp_path / "recordings")
    for kind in completion.kinds():
        runner.register(kind)
    kind = command.command_kind(settings)
    runner.register(
        command.JobKind(name=kind.name, handler=kind.handler, concurrency=1, retry=QUICK)
    )
    rec_id = catalog.create_recording(new_recording(0, uid="a" * 32))
    catalog.finish_recording(rec_id, **finish_values())
    await runner.enqueue(KIND, "a" * 32, {"uid": "a" * 32})
    for _ in range(200):
        await runner.run_once()
        states = {s for (k, s) in JobStore(catalog).counts() if k == command.KIND}
        if states and states <= {"done", "dead"}:
            break
        await asyncio.sleep(0.005)
    await runner.stop()
    return rec_id


async def test_the_command_gets_the_recording_in_its_environment(
    catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLREC_WEBHOOK_SECRET", "not for the script")
    out = tmp_path / "env.json"
    script = _script(
        tmp_path,
        f"json.dump({{k: v for k, v in os.environ.items() if k.startswith('CALLREC_')}}, "
        f"open({str(out)!r}, 'w'))\nprint('stored', sys.argv[1:])",
    )
    settings = server_settings(tmp_path, on_complete_command=f"'{script}' --flag 'two words' $HOME")
    rec_id = await _run(catalog, settings, tmp_path)
    env = json.loads(out.read_text())
    assert env["CALLREC_ID"] == str(rec_id)
    assert env["CALLREC_UID"] == "a" * 32
    assert env["CALLREC_SHA256"] == SHA
    assert env["CALLREC_PATH"] == str(tmp_path / "recordings" / "2026-03-01" / "in_0.wav")
    assert Path(env["CALLREC_PATH"]).is_absolute()
    assert env["CALLREC_DURATION"] == "60.0"
    assert env["CALLREC_REMOTE_NUMBER"] == "0301234000"
    assert env["CALLREC_LOCAL_NUMBER"] == "201"
    assert env["CALLREC_STATUS"] == "complete"
    assert env["CALLREC_START_TIME"].startswith("2026-03-01T")
    assert "CALLREC_WEBHOOK_SECRET" not in env  # callrec's own settings stay its own
    store = JobStore(catalog)
    job = store.find(command.KIND, "a" * 32)
    assert job is not None and job.state == "done"
    (attempt,) = store.attempts(job.id)
    # No shell: $HOME is passed as it is, quoted words stay one argument.
    assert attempt.detail == "exit status 0: stored ['--flag', 'two words', '$HOME']"


async def test_a_failing_command_is_retried_with_its_output_kept(
    catalog: Catalog, tmp_path: Path
) -> None:
    script = _script(tmp_path, "print('line ' * 600)\nprint('boom', file=sys.stderr)\nsys.exit(3)")
    settings = server_settings(tmp_path, on_complete_command=str(script).replace(" ", "\\ "))
    await _run(catalog, settings, tmp_path)
    store = JobStore(catalog)
    job = store.find(command.KIND, "a" * 32)
    assert job is not None and job.state == "dead" and job.attempts == QUICK.max_attempts
    history = store.attempts(job.id)
    assert [a.outcome for a in history] == ["retry", "dead"]
    assert history[0].detail.startswith("exit status 3: ...")
    assert history[0].detail.endswith("line line \nboom")
    assert len(history[0].detail) < 1100


async def test_a_command_past_its_time_is_killed(catalog: Catalog, tmp_path: Path) -> None:
    marker = tmp_path / "child-lived"
    child = f"import time; time.sleep(3); open({str(marker)!r}, 'w')"
    # A child of its own too: the whole session is killed.
    script = _script(
        tmp_path,
        f"import subprocess\nsubprocess.Popen([sys.executable, '-c', {child!r}])\n"
        "print('started', flush=True)\ntime.sleep(60)",
    )
    settings = server_settings(
        tmp_path,
        on_complete_command=f"'{script}'",
        on_complete_timeout=0.5,
    )
    await _run(catalog, settings, tmp_path)
    store = JobStore(catalog)
    job = store.find(command.KIND, "a" * 32)
    assert job is not None
    history = store.attempts(job.id)
    assert history[0].detail == "killed after 0.5 s (on_complete_timeout): started"
    await asyncio.sleep(3.5)
    assert not marker.exists()


async def test_a_missing_program_is_a_failed_run(catalog: Catalog, tmp_path: Path) -> None:
    settings = server_settings(tmp_path, on_complete_command=str(tmp_path / "nothing-here"))
    await _run(catalog, settings, tmp_path)
    job = JobStore(catalog).find(command.KIND, "a" * 32)
    assert job is not None and job.last_error is not None
    assert job.last_error.startswith(f"cannot run {tmp_path / 'nothing-here'}: ")


def test_a_command_that_cannot_be_split_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="on_complete_command: No closing quotation"):
        server_settings(tmp_path, on_complete_command="'unclosed")


async def test_stopping_the_runner_kills_a_running_command(
    catalog: Catalog, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    script = _script(
        tmp_path, f"open({str(started)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)"
    )
    settings = server_settings(tmp_path, on_complete_command=f"'{script}'")
    runner = JobRunner(JobStore(catalog), poll_interval=0.05)
    runner.register(command.command_kind(settings))
    await runner.enqueue(command.KIND, "k", {"env": {}})
    await runner.start()
    try:
        for _ in range(1000):
            if started.exists() and started.read_text():
                break
            await asyncio.sleep(0.01)
        pid = int(started.read_text())
    finally:
        await runner.stop(grace=0)
    for _ in range(1000):  # killed: gone once its parent (the handler's thread) reaps it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the command still runs after the runner stopped")
    job = JobStore(catalog).find(command.KIND, "k")
    assert job is not None and job.state == "running"  # taken again at the next start
