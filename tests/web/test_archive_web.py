"""Archived recordings (issue 16, part 4) through the real web server: the player gets the
FLAC or Opus file with its type and byte ranges, a WAV download decodes back to the original
(FLAC: byte for byte), the waveform, the ZIP, the page and deletion work as on a WAV."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio

from callrec.engine.archive import archive_sweep
from callrec.media.decode import read_all
from tests.support.audio import read_wav
from tests.support.web import CALLS, USERS, Site, start_site, stop_site

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Archived:
    site: Site
    #: name -> the WAV's bytes and peaks, before archiving
    wav: dict[str, bytes]
    peaks: dict[str, dict[str, Any]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def archived(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Archived]:
    site = await start_site(tmp_path_factory.mktemp("archived"))
    try:
        for name in ("alice", "ivan", "bob"):
            site.recs[name] = await site.record(**CALLS[name])
        root = site.server.root
        wav: dict[str, bytes] = {}
        peaks: dict[str, dict[str, Any]] = {}
        async with site.client("admin") as c:
            for name, rec_id in site.recs.items():
                rec = site.catalog.get(rec_id)
                assert rec is not None
                wav[name] = (root / rec.path).read_bytes()
                peaks[name] = (await c.get(f"/api/v1/recordings/{rec_id}/peaks")).json()
        settings = dataclasses.replace(site.server.settings, archive_after_days=0)
        now = datetime.now(UTC)
        for name, fmt in (("alice", "flac"), ("ivan", "opus")):
            report = archive_sweep(site.catalog, settings, now, ids=[site.recs[name]], fmt=fmt)
            assert [o.result for o in report.outcomes] == ["archived"]
        yield Archived(site, wav, peaks)
    finally:
        await stop_site(site)


def file_of(a: Archived, name: str) -> Path:
    rec = a.site.catalog.get(a.site.recs[name])
    assert rec is not None
    return a.site.server.root / rec.path


async def test_the_player_gets_the_archive_with_its_type_and_ranges(archived: Archived) -> None:
    a = archived
    async with a.site.client("listener") as c:
        for name, media_type, magic in (
            ("alice", "audio/flac", b"fLaC"),
            ("ivan", "audio/ogg", b"OggS"),
            ("bob", "audio/wav", b"RIFF"),
        ):
            data = file_of(a, name).read_bytes()
            url = f"/api/v1/recordings/{a.site.recs[name]}/audio"
            whole = await c.get(url)
            assert whole.status_code == 200
            assert whole.headers["content-type"] == media_type
            assert whole.content == data and data[:4] == magic
            assert whole.headers["accept-ranges"] == "bytes"
            assert Path(whole.headers["content-disposition"].split('"')[1]).suffix == (
                file_of(a, name).suffix
            )
            part = await c.get(url, headers={"range": "bytes=100-1099"})
            assert part.status_code == 206
            assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
            assert part.content == data[100:1100]
            head = await c.head(url)
            assert head.headers["content-length"] == str(len(data))


async def test_a_wav_download_of_a_flac_archive_is_the_original_wav(archived: Archived) -> None:
    a = archived
    rec = a.site.catalog.get(a.site.recs["alice"])
    assert rec is not None
    async with a.site.client("listener") as c:
        r = await c.get(f"/api/v1/recordings/{rec.id}/download", params={"format": "wav"})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    assert r.headers["content-length"] == str(len(a.wav["alice"]))
    # Lossless, and our WAV header is canonical: the very bytes recorded.
    assert r.content == a.wav["alice"]
    assert hashlib.sha256(r.content).hexdigest() == rec.extra["archive"]["original_sha256"]
    assert r.headers["content-disposition"].endswith(".wav")


async def test_a_wav_download_of_an_opus_archive_has_the_originals_length(
    archived: Archived, tmp_path: Path
) -> None:
    a = archived
    async with a.site.client("listener") as c:
        r = await c.get(
            f"/api/v1/recordings/{a.site.recs['ivan']}/download", params={"format": "wav"}
        )
    assert r.status_code == 200
    assert len(r.content) == len(a.wav["ivan"]) == int(r.headers["content-length"])
    got = tmp_path / "ivan.wav"
    got.write_bytes(r.content)
    decoded, rate = read_wav(got)
    (tmp_path / "orig.wav").write_bytes(a.wav["ivan"])
    original, orig_rate = read_wav(tmp_path / "orig.wav")
    assert rate == orig_rate == 16000 and decoded.shape == original.shape


async def test_downloads_in_the_stored_format_are_the_file(archived: Archived) -> None:
    a = archived
    async with a.site.client("listener") as c:
        for name, fmt in (("alice", "flac"), ("ivan", "opus")):
            url = f"/api/v1/recordings/{a.site.recs[name]}/download"
            r = await c.get(url, params={"format": fmt})
            assert r.status_code == 200 and r.content == file_of(a, name).read_bytes()
            part = await c.get(url, params={"format": fmt}, headers={"range": "bytes=0-9"})
            assert part.status_code == 206 and len(part.content) == 10
        # Other formats are made from the archive, as from a WAV.
        for fmt, magic in (("opus", b"OggS"), ("mp3", b"\xff"), ("flac", b"fLaC")):
            name = "ivan" if fmt == "flac" else "alice"
            r = await c.get(
                f"/api/v1/recordings/{a.site.recs[name]}/download", params={"format": fmt}
            )
            assert r.status_code == 200 and r.content[: len(magic)] == magic
    # The FLAC made from the Opus archive has the recording's length.
    decoded = read_all_bytes(r.content, ".flac")
    assert decoded.shape[0] * 2 * 1 + 44 == len(a.wav["ivan"])


def read_all_bytes(data: bytes, suffix: str) -> np.ndarray:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        path.write_bytes(data)
        return read_all(path)[1]


async def test_peaks_of_archives(archived: Archived) -> None:
    a = archived
    async with a.site.client("listener") as c:
        flac = (await c.get(f"/api/v1/recordings/{a.site.recs['alice']}/peaks")).json()
        opus = (await c.get(f"/api/v1/recordings/{a.site.recs['ivan']}/peaks")).json()
        few = await c.get(f"/api/v1/recordings/{a.site.recs['alice']}/peaks?buckets=10")
    assert flac == a.peaks["alice"]  # lossless: the very same waveform
    before = a.peaks["ivan"]
    assert opus["duration"] == before["duration"] and opus["sample_rate"] == before["sample_rate"]
    assert len(opus["peaks"]) == len(before["peaks"])
    highs = np.array([p[1] for p in opus["peaks"]])
    assert np.corrcoef(highs, np.array([p[1] for p in before["peaks"]]))[0, 1] > 0.8
    assert few.status_code == 200 and len(few.json()["peaks"]) == 10


async def test_zip_members_keep_their_real_extension(archived: Archived) -> None:
    a = archived
    ids = [a.site.recs[n] for n in ("alice", "ivan", "bob")]
    async with a.site.client("listener") as c:
        r = await c.post("/api/v1/recordings/bulk-download", json={"ids": ids})
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        names = sorted(n for n in z.namelist() if n != "index.csv")
        assert sorted(Path(n).suffix for n in names) == [".flac", ".opus", ".wav"]
        for name in ("alice", "ivan", "bob"):
            rec = a.site.catalog.get(a.site.recs[name])
            assert rec is not None
            assert z.read(rec.path) == file_of(a, name).read_bytes()
        index = z.read("index.csv").decode()
    assert ".flac" in index and ".opus" in index


async def test_metadata_and_the_page_say_archived(archived: Archived) -> None:
    a = archived
    rec_id = a.site.recs["alice"]
    async with a.site.client("listener") as c:
        meta = (await c.get(f"/api/v1/recordings/{rec_id}")).json()
    assert meta["path"].endswith(".flac") and meta["file_name"].endswith(".flac")
    assert meta["extra"]["archive"]["format"] == "flac"
    username, password = USERS["listener"][:2]
    async with httpx.AsyncClient(base_url=a.site.base, timeout=30) as browser:
        form = await browser.get("/login")
        token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        signed = await browser.post(
            "/login", data={"username": username, "password": password, "csrf": token}
        )
        assert signed.status_code == 303
        page = await browser.get(f"/recordings/{rec_id}")
    assert page.status_code == 200
    assert "archived as FLAC on" in page.text
    assert "PCMA → FLAC 8000 Hz" in page.text


async def test_deleting_an_archived_recording_removes_the_archive(archived: Archived) -> None:
    a = archived
    rec_id = a.site.recs["ivan"]
    path = file_of(a, "ivan")
    sidecar = path.with_name(path.name + ".json")
    assert path.is_file() and sidecar.is_file()
    # As a crash between the switch and the WAV's removal would have left them.
    wav = path.with_suffix(".wav")
    wav.write_bytes(a.wav["ivan"])
    wav.with_name(wav.name + ".json").write_text("{}")
    async with a.site.client("admin") as c:
        assert (await c.delete(f"/api/v1/recordings/{rec_id}")).status_code == 204
    assert not path.exists() and not sidecar.exists()
    assert not wav.exists() and not wav.with_name(wav.name + ".json").exists()
