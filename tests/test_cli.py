"""The command line over a catalogue filled by real recordings."""

from __future__ import annotations

import asyncio
import csv
import json
import wave
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callrec.cli import app
from callrec.service import Service
from tests.support.audio import write_wav
from tests.support.data import encoded
from tests.support.recording import record
from tests.support.rtp import rtp_packets
from tests.support.settings import server_settings

#: A phone-supplied name that a spreadsheet would turn into a link (CSV injection).
HOSTILE_NAME = '=HYPERLINK("http://evil.example/","click me")'


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    settings = server_settings(tmp_path)

    async def fill() -> None:
        srv = Service(settings)
        await srv.start()
        try:
            for sid, remote, device, name in (
                ("1", "2011", "aa", HOSTILE_NAME),
                ("2", "5555", "bb", "Bob"),
                ("3", "2012", "aa", "Carol"),
            ):
                packets = rtp_packets("PCMA", encoded("PCMA"))[:10]
                await record(
                    srv,
                    "PCMA",
                    packets,
                    session_id=sid,
                    remote_number=remote,
                    remote_name=name,
                    device=device,
                )
        finally:
            await srv.stop()

    asyncio.run(fill())
    env = {
        "CALLREC_DATABASE_URL": settings.database_url,
        "CALLREC_RECORDINGS_DIR": str(settings.recordings_dir),
    }
    return tmp_path, env


def test_recordings_list_filters(filled: tuple[Path, dict[str, str]]) -> None:
    _, env = filled
    runner = CliRunner()
    result = runner.invoke(app, ["recordings", "list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert [r["session_id"] for r in json.loads(result.output)] == ["3", "2", "1"]
    result = runner.invoke(app, ["recordings", "list", "--json", "--number", "201"], env=env)
    assert [r["remote_number"] for r in json.loads(result.output)] == ["2012", "2011"]
    result = runner.invoke(app, ["recordings", "list", "--json", "--device", "bb"], env=env)
    assert [r["session_id"] for r in json.loads(result.output)] == ["2"]
    result = runner.invoke(app, ["recordings", "list", "--json", "--since", "2999-01-01"], env=env)
    assert json.loads(result.output) == []
    table = runner.invoke(app, ["recordings", "list"], env=env)
    assert table.exit_code == 0 and "5555" in table.output


def test_recordings_show_and_export(filled: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    _, env = filled
    runner = CliRunner()
    shown = runner.invoke(app, ["recordings", "show", "1", "--json"], env=env)
    assert shown.exit_code == 0
    data = json.loads(shown.output)
    assert data["status"] == "complete" and Path(data["file"]).is_file()
    assert runner.invoke(app, ["recordings", "show", "99"], env=env).exit_code == 1
    out = tmp_path / "export"
    result = runner.invoke(
        app, ["recordings", "export", "--to", str(out), "--device", "aa"], env=env
    )
    assert result.exit_code == 0, result.output
    wavs = sorted(out.rglob("*.wav"))
    assert len(wavs) == 2
    with wave.open(str(wavs[0]), "rb") as w:
        assert w.getnframes() == 1600
    index = (out / "index.csv").read_text().splitlines()
    assert len(index) == 3 and index[0].startswith("id,")
    with (out / "index.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    # The spreadsheet shows the name as text: no cell starts a formula.
    assert {r["remote_name"] for r in rows} == {"'" + HOSTILE_NAME, "Carol"}


def test_config_show(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["config", "show", "--json"], env={"CALLREC_CONTROL_PORT": "12345"})
    assert result.exit_code == 0
    assert json.loads(result.output)["control_port"] == 12345
    table = runner.invoke(app, ["config", "show"])
    assert "control_port" in table.output
    bad = runner.invoke(app, ["config", "show"], env={"CALLREC_CONTROL_PORT": "x"})
    assert bad.exit_code == 2 and "configuration error" in bad.output


def test_phone_reports_refusal(tmp_path: Path) -> None:
    runner = CliRunner()
    wav = write_wav(tmp_path / "a.wav", bytes(1600))
    result = runner.invoke(app, ["phone", "--play", str(wav), "--server", "127.0.0.1:1", "--fast"])
    assert result.exit_code == 1
    assert "phone failed" in result.output or "recording failed" in result.output


def test_config_show_hides_the_database_password() -> None:
    runner = CliRunner()
    url = "postgresql+psycopg://callrec:s3cr3t-pw@db.example:5432/callrec"
    env = {"CALLREC_DATABASE_URL": url}
    shown = json.loads(runner.invoke(app, ["config", "show", "--json"], env=env).output)
    assert shown["database_url"] == "postgresql+psycopg://callrec:***@db.example:5432/callrec"
    table = runner.invoke(app, ["config", "show"], env=env, terminal_width=400)
    assert table.exit_code == 0 and "s3cr3t-pw" not in table.output
