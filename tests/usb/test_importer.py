"""Importing phone-local files into the catalogue through the recording engine (SQLite, and
PostgreSQL when reachable)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from callrec.catalog import Catalog
from callrec.config import Settings
from callrec.engine import files as files_module
from callrec.exceptions import CatalogError, ConfigError, LocalFileError
from callrec.media.wav import read_wav_info
from callrec.service import standalone_engine
from callrec.usb import importer as importer_module
from callrec.usb.importer import (
    DEFAULT_IMPORT_DIR,
    DEFAULT_MAX_BYTES,
    Importer,
    ImportTooLargeError,
    name_time,
)
from tests.support.data import LOCALFILE_DATA

PHONE_TZ = timezone(timedelta(hours=3))


@asynccontextmanager
async def importer(
    catalog: Catalog,
    root: Path,
    *,
    import_dir: str = DEFAULT_IMPORT_DIR,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> AsyncIterator[Importer]:
    """An importer over ``catalog`` with recordings under ``root``, as `callrec serve` has."""
    settings = Settings(recordings_dir=root)
    async with standalone_engine(settings, catalog, name="test") as engine:
        yield Importer(engine, catalog, import_dir=import_dir, max_bytes=max_bytes)


async def import_file(catalog: Catalog, root: Path, path: Path, **kw: Any) -> Any:
    """One import of the file at ``path`` (``import_dir``, ``max_bytes``: the importer's)."""
    options = {k: kw.pop(k) for k in ("import_dir", "max_bytes") if k in kw}
    async with importer(catalog, root, **options) as imp:
        return await imp.import_file(path, **kw)


async def import_bytes(catalog: Catalog, root: Path, data: bytes, **kw: Any) -> Any:
    options = {k: kw.pop(k) for k in ("import_dir", "max_bytes") if k in kw}
    async with importer(catalog, root, **options) as imp:
        return await imp.import_bytes(data, **kw)


def _files(root: Path) -> list[str]:
    """The files under ``root``, but for callrec's own (the journals)."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and ".callrec" not in p.relative_to(root).parts
    )


def _drive(tmp_path: Path, name: str, source: str = "pcma-rtp.wav") -> Path:
    """A copy of a committed file under the name the phone gave it."""
    drive = tmp_path / "drive"
    drive.mkdir(exist_ok=True)
    path = drive / name
    shutil.copy(LOCALFILE_DATA / source, path)
    return path


async def test_import_catalogues_a_playable_wav_and_keeps_the_original(
    catalog: Catalog, tmp_path: Path
) -> None:
    root = tmp_path / "recordings"
    source = _drive(tmp_path, "Record_20261126161130.wav", "g722-bare.wav")
    result = await import_file(catalog, root, source, device="0c383e0e709a", tz=PHONE_TZ)
    assert not result.duplicate and result.problems == ()
    rec = result.recording
    assert rec == catalog.get(rec.id)
    assert (rec.source, rec.status, rec.stop_reason) == ("usb", "complete", "imported")
    assert (rec.codec, rec.sample_rate, rec.channels, rec.device) == (
        "G722",
        16000,
        1,
        "0c383e0e709a",
    )
    assert rec.duration == 1.0
    # The phone's clock said 16:11:30 at UTC+3.
    assert rec.start_time == datetime(2026, 11, 26, 13, 11, 30, tzinfo=UTC)
    assert rec.end_time == rec.start_time + timedelta(seconds=1)
    assert rec.path == "usb/2026-11-26/Record_20261126161130.wav"
    assert rec.original_path == "usb/2026-11-26/Record_20261126161130.orig"
    assert _files(root) == [rec.original_path, rec.path, f"{rec.path}.json"]
    original = source.read_bytes()
    assert (root / rec.original_path).read_bytes() == original
    assert rec.original_sha256 == result.original_sha256 == hashlib.sha256(original).hexdigest()
    wav = read_wav_info(root / rec.path)
    assert (wav.sample_rate, wav.duration) == (16000, 1.0)
    assert (rec.sha256, rec.size_bytes) == (wav.sha256, wav.size_bytes)
    assert rec.extra["import"] == {
        "original_name": "Record_20261126161130.wav",
        "codec_name": "G722",
        "byte_order": "little",
        "unit_size": 160,
        "increment": 160,
        "data_size": 8000,
        "file_size": 8076,
        "units": 50,
        "rtp_headers": False,
        "damaged": False,
        "problems": [],
        "start_time_from": "name",
    }


async def test_the_same_file_twice_is_recognised(catalog: Catalog, tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    first = await import_file(catalog, root, _drive(tmp_path, "Record_20261126161130.wav"))
    before = _files(root)
    # Copied off the drive again, under another name: still the same recording.
    again = await import_file(catalog, root, _drive(tmp_path, "copy of it.wav"))
    assert again.duplicate and again.recording == first.recording
    assert again.original_sha256 == first.original_sha256
    assert _files(root) == before
    assert catalog.count() == 1
    # The upload path recognises it too.
    data = (LOCALFILE_DATA / "pcma-rtp.wav").read_bytes()
    assert (await import_bytes(catalog, root, data, name="upload.wav")).duplicate


async def test_same_name_other_content_gets_its_own_files(catalog: Catalog, tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    name = "Record_20261126161130.wav"
    a = await import_file(catalog, root, _drive(tmp_path, name, "pcma-rtp.wav"))
    b = await import_bytes(
        catalog, root, (LOCALFILE_DATA / "g722-bare.wav").read_bytes(), name=name, tz=PHONE_TZ
    )
    assert not b.duplicate and a.recording.id != b.recording.id
    assert b.recording.path == "usb/2026-11-26/Record_20261126161130_1.wav"
    assert b.recording.original_path == "usb/2026-11-26/Record_20261126161130_1.orig"


async def test_damaged_file_is_imported_as_recovered(catalog: Catalog, tmp_path: Path) -> None:
    result = await import_file(
        catalog, tmp_path / "rec", _drive(tmp_path, "Record_20260101000000.wav", "truncated.wav")
    )
    rec = result.recording
    assert (rec.status, rec.duration) == ("recovered", pytest.approx(0.6))
    assert result.problems[0].startswith("file cut short")
    assert rec.extra["import"]["problems"] == list(result.problems)
    assert rec.extra["import"]["damaged"] is True


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("unknown-codec.wav", r"^codec 'iLBC' is not supported"),
        ("zero-length.wav", r"^file is empty"),
        ("not-this-format.wav", r"no NUL terminator"),
        ("standard.wav", r"^a standard RIFF/WAVE file"),
    ],
)
async def test_unreadable_files_are_refused_cleanly(
    catalog: Catalog, tmp_path: Path, source: str, message: str
) -> None:
    root = tmp_path / "recordings"
    with pytest.raises(LocalFileError, match=message):
        await import_file(catalog, root, _drive(tmp_path, "Record_1.wav", source))
    assert catalog.count() == 0
    assert not root.exists() or _files(root) == []


async def test_size_limit(catalog: Catalog, tmp_path: Path) -> None:
    path = _drive(tmp_path, "Record_1.wav")
    with pytest.raises(ImportTooLargeError) as caught:
        await import_file(catalog, tmp_path / "rec", path, max_bytes=8675)
    assert str(caught.value) == (
        "file is 8676 bytes, over the import limit of 8675 bytes (setting usb_import_max_bytes)"
    )
    assert caught.value.reason == "too_large"
    with pytest.raises(ImportTooLargeError):
        await import_bytes(catalog, tmp_path / "rec", path.read_bytes(), name="x", max_bytes=100)
    assert (await import_file(catalog, tmp_path / "rec", path, max_bytes=8676)).recording.id


async def test_missing_file(catalog: Catalog, tmp_path: Path) -> None:
    with pytest.raises(LocalFileError, match=r"^cannot read .*nope\.wav: No such file"):
        await import_file(catalog, tmp_path, tmp_path / "nope.wav")


@pytest.mark.parametrize("import_dir", ["../outside", "/abs", "", "a/../../b", "."])
async def test_import_dir_must_stay_under_root(
    catalog: Catalog, tmp_path: Path, import_dir: str
) -> None:
    with pytest.raises(ConfigError, match="usb_import_dir"):
        await import_file(
            catalog, tmp_path / "rec", _drive(tmp_path, "R.wav"), import_dir=import_dir
        )


async def test_upload_name_cannot_leave_the_folder(catalog: Catalog, tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    data = (LOCALFILE_DATA / "pcma-rtp.wav").read_bytes()
    now = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
    result = await import_bytes(
        catalog, root, data, name="..\\..\\..\\etc/passwd", file_time=now, import_dir="phones/usb"
    )
    rec = result.recording
    assert rec.path.startswith("phones/usb/") and rec.path.endswith("/passwd.wav")
    assert rec.start_time == now - timedelta(seconds=1)
    assert rec.extra["import"]["start_time_from"] == "file_time"
    assert all((root / p).resolve().is_relative_to(root.resolve()) for p in _files(root))


async def test_start_time_falls_back_to_the_file_time_then_now(
    catalog: Catalog, tmp_path: Path
) -> None:
    path = _drive(tmp_path, "nameless.wav")
    mtime = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    os.utime(path, (mtime, mtime))
    rec = (await import_file(catalog, tmp_path / "rec", path)).recording
    # The file's last write ends the recording.
    assert rec.start_time == datetime(2026, 3, 1, 11, 59, 59, tzinfo=UTC)
    before = datetime.now(UTC)
    data = (LOCALFILE_DATA / "g722-bare.wav").read_bytes()
    late = (await import_bytes(catalog, tmp_path / "rec", data, name="upload")).recording
    assert before <= late.start_time <= datetime.now(UTC)
    assert late.extra["import"]["start_time_from"] == "import_time"


async def test_a_failing_catalogue_keeps_the_import_and_catalogues_it_later(
    catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = catalog.apply_journal
    failing = True

    def refuse(entries: Any) -> Any:
        if failing:
            raise CatalogError("cannot apply the journal: disk I/O error")
        return real(entries)

    monkeypatch.setattr(catalog, "apply_journal", refuse)
    monkeypatch.setattr(importer_module, "CATALOGUE_WAIT", 0.5)
    root = tmp_path / "rec"
    settings = Settings(recordings_dir=root)
    async with standalone_engine(settings, catalog, name="test") as engine:
        imp = Importer(engine, catalog, import_dir=DEFAULT_IMPORT_DIR, max_bytes=DEFAULT_MAX_BYTES)
        with pytest.raises(CatalogError, match="is stored, but the catalogue did not take it"):
            await imp.import_file(_drive(tmp_path, "Record_20261126161130.wav"))
        # Record first: the audio, the original and the sidecar are on disk, not the row.
        stem = "usb/2026-11-26/Record_20261126161130"
        assert _files(root) == [f"{stem}.orig", f"{stem}.wav", f"{stem}.wav.json"]
        assert catalog.count() == 0
        failing = False  # the catalogue is back: the journal catches up
        await asyncio.wait_for(engine.journal.applied.wait(), 30)
    (row,) = catalog.find()
    assert (row.path, row.status, row.stop_reason) == (f"{stem}.wav", "complete", "imported")


async def test_a_file_name_taken_meanwhile_moves_to_the_next(
    catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "rec"
    real = files_module.write_original
    calls: list[Path] = []

    def racing_write(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 1:
            # Another program creates the WAV's name after the claim looked at the disk.
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_suffix(".wav").write_bytes(b"not ours")
        real(path, data)

    monkeypatch.setattr(files_module, "write_original", racing_write)
    result = await import_file(catalog, root, _drive(tmp_path, "Record_20261126161130.wav"))
    assert [p.name for p in calls] == ["Record_20261126161130.orig", "Record_20261126161130_1.orig"]
    assert result.recording.path.endswith("/Record_20261126161130_1.wav")
    folder = root / "usb/2026-11-26"
    # Theirs is left alone, ours (the original written for the first name) is gone.
    assert (folder / "Record_20261126161130.wav").read_bytes() == b"not ours"
    assert not (folder / "Record_20261126161130.orig").exists()
    # One recording, under the next name.
    assert catalog.count() == 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Record_20261126161130.wav", datetime(2026, 11, 26, 16, 11, 30)),
        ("Record_2026-11-26_16-11-30.wav", datetime(2026, 11, 26, 16, 11, 30)),
        ("Record_20261126_161130.wav", datetime(2026, 11, 26, 16, 11, 30)),
        ("usb/2025/Record_2026-11-26T16:11:30.wav", datetime(2026, 11, 26, 16, 11, 30)),
        ("Record_20261126161130_1.wav", datetime(2026, 11, 26, 16, 11, 30)),
        ("Record_20261399999999.wav", None),  # not a date
        ("Record_2026112616113.wav", None),  # 13 digits
        ("Record_.wav", None),
    ],
)
async def test_name_time(name: str, expected: datetime | None) -> None:
    parsed = name_time(name, PHONE_TZ)
    assert parsed == (None if expected is None else expected.replace(tzinfo=PHONE_TZ))


async def test_name_time_defaults_to_the_local_zone() -> None:
    parsed = name_time("Record_20261126161130.wav")
    assert parsed is not None and parsed.tzinfo is not None
    assert parsed.replace(tzinfo=None) == datetime(2026, 11, 26, 16, 11, 30)


async def test_find_original_checks_its_argument(catalog: Catalog) -> None:
    assert catalog.find_original("0" * 64) is None
    with pytest.raises(CatalogError, match="sha256 must be 64 lowercase hex digits"):
        catalog.find_original("XYZ")
