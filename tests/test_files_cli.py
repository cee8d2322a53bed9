"""``callrec file info|convert|play|import`` and ``callrec phone --local-record``."""

from __future__ import annotations

import json
import shutil
import sys
import wave
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from callrec.cli import app
from callrec.media import player as player_module
from callrec.media.player import Player, find_player
from tests.support.audio import write_wav
from tests.support.data import LOCALFILE_DATA
from tests.support.ffmpeg import ffprobe, needs_ffprobe

GOOD = ["big-endian.wav", "g722-bare.wav", "pcma-rtp.wav"]
DAMAGED = ["datasize-too-big.wav", "lying-datasize.wav", "truncated.wav"]
BAD = ["cut-in-header.wav", "not-this-format.wav", "unknown-codec.wav", "zero-length.wav"]


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(app, list(args), env=env)
    # Never a traceback: every failure is a message and an exit status.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


@pytest.fixture
def drive(tmp_path: Path) -> Path:
    """A USB drive's worth of files in two folders, with a standard WAV among them."""
    root = tmp_path / "drive"
    (root / "2026-11").mkdir(parents=True)
    for i, name in enumerate(sorted(GOOD + DAMAGED + BAD)):
        folder = root / "2026-11" if i % 2 else root
        shutil.copy(LOCALFILE_DATA / name, folder / name)
    shutil.copy(LOCALFILE_DATA / "standard.wav", root / "2026-11" / "already-standard.wav")
    (root / "notes.txt").write_text("not a .wav: not looked at")
    return root


# -- info ------------------------------------------------------------------------------------


def test_info_text(tmp_path: Path) -> None:
    result = run("file", "info", str(LOCALFILE_DATA / "truncated.wav"))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "codec        PCMA (8000 Hz)" in out
    assert (
        "unit         172 bytes: RTP packets (12-byte header stripped), 160 bytes of audio" in out
    )
    assert "increment    160 (20 ms)" in out
    assert "units        30" in out
    assert "duration     0.60 s (header announces 1.00 s)" in out
    assert "problems     file cut short: header announces 8600 data bytes" in out
    assert "40 bytes at the end are a partial unit; ignored" in out
    assert out.rstrip().endswith("1 read, 0 failed")


def test_info_json_on_a_directory_reports_each_file(drive: Path) -> None:
    result = run("file", "info", "--json", str(drive))
    assert result.exit_code == 1  # three files are not phone recordings
    rows = {Path(r["path"]).name: r for r in json.loads(result.stdout)}
    assert set(rows) == set(GOOD + DAMAGED + BAD)
    assert rows["pcma-rtp.wav"] == {
        "path": str(drive / "pcma-rtp.wav"),
        "codec": "PCMA",
        "sample_rate": 8000,
        "byte_order": "little",
        "unit_size": 172,
        "payload_size": 160,
        "rtp_headers": True,
        "increment": 160,
        "units": 50,
        "duration": 1.0,
        "announced_duration": 1.0,
        "data_size": 8600,
        "file_size": 8676,
        "damaged": False,
        "problems": [],
        "error": None,
    }
    assert rows["big-endian.wav"]["byte_order"] == "big"
    assert rows["lying-datasize.wav"]["damaged"] is True
    assert rows["unknown-codec.wav"]["sample_rate"] is None
    assert rows["zero-length.wav"] == {
        "path": str(drive / "2026-11" / "zero-length.wav"),
        "error": "file is empty (0 bytes): not a phone recording",
    }
    assert rows["not-this-format.wav"]["error"].endswith("not a phone recording")


def test_info_missing_file() -> None:
    result = run("file", "info", "/nonexistent/Record_1.wav")
    assert result.exit_code == 1
    assert "error /nonexistent/Record_1.wav: no such file or directory" in result.output


# -- convert ---------------------------------------------------------------------------------


def test_convert_a_tree_reports_errors_at_the_end(drive: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("file", "convert", str(drive), "-o", str(out))
    assert result.exit_code == 1
    converted = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    expected = sorted(
        (f"2026-11/{n}" if i % 2 else n)
        for i, n in enumerate(sorted(GOOD + DAMAGED + BAD))
        if n in GOOD + DAMAGED
    )
    assert converted == expected
    output = result.output
    assert "(damaged: see `callrec file info`)" in output
    assert "skipped " + str(drive / "2026-11" / "already-standard.wav") in output
    for name in BAD:
        assert f"{name}: " in output
    assert "converted 6, skipped 1, failed 4" in output
    # The errors come after the work, each on its own line.
    assert output.index("error ") > output.index("->")

    again = run("file", "convert", str(drive), "-o", str(out))
    assert "converted 0, skipped 7, failed 4" in again.output
    assert "exists (use --overwrite to replace it)" in again.output
    forced = run("file", "convert", str(drive), "-o", str(out), "--overwrite")
    assert "converted 6, skipped 1, failed 4" in forced.output


@needs_ffprobe
@pytest.mark.parametrize(("fmt", "codec"), [("wav", "pcm_s16le"), ("flac", "flac")])
def test_convert_files_to_a_format(fmt: str, codec: str, tmp_path: Path) -> None:
    sources = [str(LOCALFILE_DATA / "g722-bare.wav"), str(LOCALFILE_DATA / "pcma-rtp.wav")]
    result = run("file", "convert", *sources, "-o", str(tmp_path), "--format", fmt)
    assert result.exit_code == 0, result.output
    assert "converted 2, skipped 0, failed 0" in result.output
    g722 = ffprobe(tmp_path / f"g722-bare.{fmt}")
    assert (g722["codec"], g722["sample_rate"], g722["duration"]) == (codec, 16000, 1.0)
    pcma = ffprobe(tmp_path / f"pcma-rtp.{fmt}")
    assert (pcma["codec"], pcma["sample_rate"], pcma["duration"]) == (codec, 8000, 1.0)


def test_convert_output_inside_the_input_is_not_read_back(drive: Path) -> None:
    out = drive / "converted"
    assert run("file", "convert", str(drive), "-o", str(out)).exit_code == 1
    again = run("file", "convert", str(drive), "-o", str(out))
    # The standard WAVs it wrote are not counted as input, nor skipped as standard WAVs.
    assert "converted 0, skipped 7, failed 4" in again.output


def test_convert_bad_format() -> None:
    result = run("file", "convert", str(LOCALFILE_DATA / "pcma-rtp.wav"), "-o", "x", "-f", "mp3")
    assert result.exit_code == 2


# -- play ------------------------------------------------------------------------------------


def test_play_without_audio_output_points_at_convert(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(player_module, "find_player", lambda: None)
    result = run("file", "play", str(LOCALFILE_DATA / "pcma-rtp.wav"))
    assert result.exit_code == 1
    assert "no audio output here" in result.output
    assert f"callrec file convert {LOCALFILE_DATA / 'pcma-rtp.wav'} -o DIR" in result.output


def test_play_hands_a_wav_to_the_player(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    log = tmp_path / "played.txt"
    script = tmp_path / "fake_player.py"
    script.write_text(
        "import sys, wave\n"
        "with wave.open(sys.argv[1]) as w:\n"
        f"    open({str(log)!r}, 'w').write(f'{{w.getframerate()}} {{w.getnframes()}}')\n"
    )
    fake = Player(name="fakeplay", command=(sys.executable, str(script)))
    monkeypatch.setattr(player_module, "find_player", lambda: fake)
    result = run("file", "play", str(LOCALFILE_DATA / "g722-bare.wav"))
    assert result.exit_code == 0, result.output
    assert "with fakeplay" in result.output
    assert log.read_text() == "16000 16000"


def test_play_reports_a_failing_player_and_a_bad_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failing = Player(name="failplay", command=(sys.executable, "-c", "import sys; sys.exit(3)"))
    monkeypatch.setattr(player_module, "find_player", lambda: failing)
    result = run("file", "play", str(LOCALFILE_DATA / "pcma-rtp.wav"))
    assert result.exit_code == 1 and "failplay failed (exit 3)" in result.output
    bad = run("file", "play", str(LOCALFILE_DATA / "unknown-codec.wav"))
    assert bad.exit_code == 1 and "codec 'iLBC' is not supported" in bad.output


def test_find_player_needs_an_audio_output(tmp_path: Path) -> None:
    everything = {"pw-play", "paplay", "aplay", "ffplay", "afplay"}

    def which(name: str) -> str | None:
        return f"/usr/bin/{name}" if name in everything else None

    nothing = tmp_path / "no-snd"
    assert find_player(which=which, env={}, dev_snd=nothing, platform="linux") is None
    snd = tmp_path / "snd"
    snd.mkdir()
    (snd / "pcmC0D0c").touch()  # a capture device only
    assert find_player(which=which, env={}, dev_snd=snd, platform="linux") is None
    (snd / "pcmC0D0p").touch()
    alsa = find_player(which=which, env={}, dev_snd=snd, platform="linux")
    assert alsa == Player(name="aplay", command=("/usr/bin/aplay", "-q"))
    pulse = find_player(which=which, env={"PULSE_SERVER": "x"}, dev_snd=nothing, platform="linux")
    assert pulse is not None and pulse.name == "paplay"
    runtime = tmp_path / "run"
    (runtime / "pulse").mkdir(parents=True)
    (runtime / "pipewire-0").touch()
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    pipewire = find_player(which=which, env=env, dev_snd=nothing, platform="linux")
    assert pipewire is not None and pipewire.name == "pw-play"
    only_ffplay = find_player(
        which=lambda n: which(n) if n == "ffplay" else None, env=env, dev_snd=nothing,
        platform="linux",
    )  # fmt: skip
    assert only_ffplay is not None and only_ffplay.argv(Path("a.wav")) == [
        "/usr/bin/ffplay", "-nodisp", "-autoexit", "-loglevel", "error", "a.wav",
    ]  # fmt: skip
    mac = find_player(which=which, env={}, dev_snd=nothing, platform="darwin")
    assert mac is not None and mac.name == "afplay"


# -- import ----------------------------------------------------------------------------------


def test_import_a_drive_then_again(drive: Path, tmp_path: Path) -> None:
    env = {
        "CALLREC_DATABASE_URL": f"sqlite:///{tmp_path / 'callrec.db'}",
        "CALLREC_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "CALLREC_CONFIG": "",
    }
    result = run("file", "import", str(drive), "--device", "0c383e0e709a", env=env)
    assert result.exit_code == 1
    assert "imported 6, already imported 0, skipped 1, failed 4" in result.output
    assert "(1.00 s, complete)" in result.output and "(0.60 s, recovered)" in result.output

    again = run("file", "import", "--json", str(drive / "2026-11"), env=env)
    rows = {Path(r["path"]).name: r for r in json.loads(again.stdout)}
    assert rows["g722-bare.wav"]["duplicate"] is True
    assert rows["zero-length.wav"]["error"] == "file is empty (0 bytes): not a phone recording"

    listed = run("recordings", "list", "--json", env=env)
    recs = json.loads(listed.stdout)
    assert len(recs) == 6
    assert {r["source"] for r in recs} == {"usb"} and {r["device"] for r in recs} == {
        "0c383e0e709a"
    }
    shown = json.loads(run("recordings", "show", str(recs[0]["id"]), "--json", env=env).stdout)
    assert Path(shown["file"]).is_file()
    with wave.open(shown["file"]) as wav:
        assert wav.getframerate() in (8000, 16000)


def test_import_over_the_size_limit(tmp_path: Path) -> None:
    env = {
        "CALLREC_DATABASE_URL": f"sqlite:///{tmp_path / 'callrec.db'}",
        "CALLREC_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "CALLREC_USB_IMPORT_MAX_BYTES": "1000",
        "CALLREC_CONFIG": "",
    }
    result = run("file", "import", str(LOCALFILE_DATA / "pcma-rtp.wav"), env=env)
    assert result.exit_code == 1
    assert "over the import limit of 1000 bytes" in result.output


# -- the phone simulator ---------------------------------------------------------------------


def test_phone_local_only_then_info(tmp_path: Path) -> None:
    source = write_wav(tmp_path / "call.wav", bytes(2 * 8000 * 2))  # 2 s of silence
    usb = tmp_path / "usb"
    result = run(
        "phone", "--play", str(source), "--codec", "PCMU", "--local-record", str(usb),
        "--local-only", "--local-max-bytes", str(76 + 30 * 172), "--pause-at", "0.4",
        "--resume-at", "1.0", "--pause-at", "1.8",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    files = sorted(usb.iterdir())
    assert len(files) == 2 and result.output.count("local file: ") == 2
    assert "start answer" not in result.output
    info = json.loads(run("file", "info", "--json", *map(str, files)).stdout)
    assert [r["units"] for r in info] == [30, 30]  # 2 s less 0.6 s and the last 0.2 s
    assert all(r["rtp_headers"] and r["codec"] == "PCMU" for r in info)


def test_phone_local_options_are_checked(tmp_path: Path) -> None:
    source = write_wav(tmp_path / "call.wav", bytes(1600))
    result = run("phone", "--play", str(source), "--local-record", str(tmp_path),
                 "--local-only", "--resume-at", "1")  # fmt: skip
    assert result.exit_code == 1
    assert "1 resume times for 0 pauses" in result.output
