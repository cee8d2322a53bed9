"""The REST API over a real HTTP server, on recordings the phone simulator made."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, timedelta

import httpx
import numpy as np
import pytest
import soundfile

from callrec.sim.phone import PhoneCall
from tests.support.ffmpeg import needs_ffmpeg
from tests.support.web import CALLS, DEVICE_A, Site

pytestmark = pytest.mark.asyncio(loop_scope="module")


def ids(page: dict) -> list[int]:
    return [item["id"] for item in page["items"]]


async def search(site: Site, who: str = "admin", **params: object) -> dict:
    async with site.client(who) as c:
        r = await c.get("/api/v1/recordings", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def file_bytes(site: Site, rec_id: int) -> bytes:
    rec = site.catalog.get(rec_id)
    assert rec is not None
    return (site.server.root / rec.path).read_bytes()


# -- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/recordings"),
        ("GET", "/api/v1/recordings/1"),
        ("GET", "/api/v1/recordings/1/audio"),
        ("HEAD", "/api/v1/recordings/1/audio"),
        ("GET", "/api/v1/recordings/1/download?format=flac"),
        ("GET", "/api/v1/recordings/1/peaks"),
        ("GET", "/api/v1/recordings/1/notes"),
        ("POST", "/api/v1/recordings/1/notes"),
        ("PUT", "/api/v1/recordings/1/tags/x"),
        ("DELETE", "/api/v1/recordings/1"),
        ("GET", "/api/v1/recordings/bulk-download"),
        ("POST", "/api/v1/recordings/bulk-download"),
        ("GET", "/api/v1/tags"),
        ("GET", "/api/v1/live"),
        ("GET", "/api/v1/live/events"),
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/tokens"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/audit.csv"),
    ],
)
async def test_anonymous_gets_401(site: Site, method: str, path: str) -> None:
    async with site.client() as c:
        r = await c.request(method, path)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        wrong = await c.request(method, path, headers={"authorization": "Bearer crt_nope"})
        assert wrong.status_code == 401


async def test_pages_send_anonymous_to_sign_in(site: Site) -> None:
    async with site.client() as c:
        r = await c.get("/recordings?q=3001")
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=/recordings%3Fq%3D3001"
        assert (await c.get(f"/recordings/{site.recs['alice']}")).status_code == 303


async def test_health_is_public_and_says_little(site: Site) -> None:
    async with site.client() as c:
        r = await c.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["database"] is True
    assert "items" not in r.json()


async def test_me(site: Site) -> None:
    async with site.client("ext3002") as c:
        me = (await c.get("/api/v1/me")).json()
    assert me["username"] == "ext3002" and me["role"] == "listener"
    assert me["extensions"] == ["3002"]


# -- search --------------------------------------------------------------------------------


async def test_lists_newest_first_with_metadata_and_counters(site: Site) -> None:
    page = await search(site)
    assert ids(page) == [site.recs[n] for n in ("carol", "ivan", "bob", "alice")]
    assert page["total"] == 4 and page["total_exact"] is True and page["next_cursor"] is None
    ivan = next(i for i in page["items"] if i["id"] == site.recs["ivan"])
    assert ivan["codec"] == "G722" and ivan["sample_rate"] == 16000
    assert ivan["remote_name"] == "Иван Петров" and ivan["duration"] == pytest.approx(3.0)
    assert ivan["counters"]["received"] == 150 and ivan["counters"]["lost"] == 0
    assert ivan["quality"]["grade"] == "good" and ivan["quality"]["expected"] == 150
    assert ivan["status"] == "complete" and ivan["file_name"].endswith(".wav")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"q": "alice"}, ["alice"]),
        ({"q": "ALICE example"}, ["alice"]),
        ({"q": "Петров"}, ["ivan"]),
        ({"q": "3001"}, ["ivan", "alice"]),
        ({"q": "3001 4000"}, ["ivan"]),
        ({"q": "2011"}, ["carol", "alice"]),
        ({"q": "7abc"}, ["carol"]),
        ({"q": "nobody"}, []),
        ({"q": "%"}, []),
        ({"direction": "in"}, ["carol", "bob"]),
        ({"direction": "out", "q": "2011"}, ["alice"]),
        ({"device": DEVICE_A}, ["ivan", "alice"]),
        ({"device": DEVICE_A.upper()}, ["ivan", "alice"]),
        ({"codec": "G722"}, ["ivan"]),
        ({"codec": "pcma"}, ["carol", "alice"]),
        ({"status": "complete"}, ["carol", "ivan", "bob", "alice"]),
        ({"status": "failed"}, []),
        ({"source": "server"}, ["carol", "ivan", "bob", "alice"]),
        ({"min_duration": "1.5"}, ["ivan", "alice"]),
        ({"max_duration": "1"}, ["carol", "bob"]),
        ({"min_duration": "1", "max_duration": "2"}, ["bob", "alice"]),
        ({"sort": "duration"}, ["carol", "bob", "alice", "ivan"]),
        ({"sort": "-duration"}, ["ivan", "alice", "bob", "carol"]),
        ({"sort": "start_time"}, ["alice", "bob", "ivan", "carol"]),
        ({"sort": "remote_number", "direction": "out"}, ["alice", "ivan"]),
    ],
)
async def test_search_filters(site: Site, params: dict, expected: list[str]) -> None:
    page = await search(site, **params)
    assert ids(page) == [site.recs[n] for n in expected]
    assert page["total"] == len(expected)


async def test_date_range_in_a_time_zone(site: Site) -> None:
    first = site.catalog.get(site.recs["alice"])
    assert first is not None
    day = first.start_time.astimezone(UTC).date()
    today = await search(site, since=day.isoformat(), until=day.isoformat(), tz="UTC")
    assert today["total"] == 4
    before = await search(site, until=(day - timedelta(days=1)).isoformat(), tz="UTC")
    assert before["total"] == 0
    # An ISO date-time with an offset, one second after the last call started.
    last = site.catalog.get(site.recs["carol"])
    assert last is not None
    after = (last.start_time + timedelta(seconds=1)).astimezone().isoformat()
    assert (await search(site, since=after))["total"] == 0
    middle = site.catalog.get(site.recs["bob"])
    assert middle is not None
    page = await search(site, since=middle.start_time.isoformat(), sort="start_time")
    assert ids(page) == [site.recs[n] for n in ("bob", "ivan", "carol")]


async def test_bad_search_parameters_are_400(site: Site) -> None:
    async with site.client("admin") as c:
        for params, message in [
            ({"since": "yesterday"}, "is not a date"),
            ({"tz": "Mars/Olympus"}, "unknown time zone"),
            ({"min_duration": "long"}, "must be a number"),
            ({"cursor": "garbage"}, "invalid cursor"),
            ({"cursor": "x", "page": 2}, "one of cursor, page and at"),
        ]:
            r = await c.get("/api/v1/recordings", params=params)
            assert r.status_code == 400, (params, r.text)
            assert message in r.json()["detail"]
        r = await c.get("/api/v1/recordings", params={"sort": "sha256"})
        assert r.status_code == 400 and "sort must be one of" in r.json()["detail"]
        # A query parameter out of its range is a bad parameter too.
        assert (await c.get("/api/v1/recordings", params={"limit": 0})).status_code == 400


async def test_cursor_pagination_walks_every_row_once(site: Site) -> None:
    for sort in ("-start_time", "duration", "remote_number"):
        seen: list[int] = []
        cursor = None
        for _ in range(10):
            params = {"limit": 1, "sort": sort, **({"cursor": cursor} if cursor else {})}
            page = await search(site, **params)
            seen += ids(page)
            assert page["total"] == 4
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids(await search(site, sort=sort))
        assert sorted(seen) == sorted(site.recs[n] for n in CALLS)


async def test_page_pagination(site: Site) -> None:
    first = await search(site, limit=3, page=1)
    second = await search(site, limit=3, page=2)
    assert len(first["items"]) == 3 and len(second["items"]) == 1
    assert ids(first) + ids(second) == ids(await search(site))
    assert (await search(site, limit=3, page=3))["items"] == []


# -- audio ---------------------------------------------------------------------------------


async def test_audio_ranges(site: Site) -> None:
    rec_id = site.recs["ivan"]
    data = file_bytes(site, rec_id)
    size = len(data)
    url = f"/api/v1/recordings/{rec_id}/audio"
    async with site.client("listener") as c:
        whole = await c.get(url)
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["content-type"] == "audio/wav"
        assert whole.headers["content-length"] == str(size)
        assert whole.headers["content-disposition"].startswith("inline;")
        etag = whole.headers["etag"]

        cases = {
            "bytes=0-99": (0, 99),
            "bytes=1000-1999": (1000, 1999),
            "bytes=-500": (size - 500, size - 1),
            f"bytes={size - 10}-": (size - 10, size - 1),
            f"bytes=100-{size + 5000}": (100, size - 1),
            "bytes=0-0": (0, 0),
        }
        for header, (start, end) in cases.items():
            r = await c.get(url, headers={"range": header})
            assert r.status_code == 206, header
            assert r.headers["content-range"] == f"bytes {start}-{end}/{size}", header
            assert r.headers["content-length"] == str(end - start + 1)
            assert r.content == data[start : end + 1], header
            assert r.headers["accept-ranges"] == "bytes"

        for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
            r = await c.get(url, headers={"range": header})
            assert r.status_code == 416, header
            assert r.headers["content-range"] == f"bytes */{size}"

        # Not understood (or several ranges): ignored, the whole file.
        for header in ("bytes=abc", "lines=1-2", "bytes=5-1", "bytes=0-1,5-6"):
            r = await c.get(url, headers={"range": header})
            assert r.status_code == 200 and r.content == data, header

        # If-Range: the range only while the file is the one the client saw.
        r = await c.get(url, headers={"range": "bytes=0-9", "if-range": etag})
        assert r.status_code == 206
        r = await c.get(url, headers={"range": "bytes=0-9", "if-range": '"stale"'})
        assert r.status_code == 200 and r.content == data

        head = await c.head(url, headers={"range": "bytes=10-19"})
        assert head.status_code == 206 and head.content == b""
        assert head.headers["content-range"] == f"bytes 10-19/{size}"
        assert (await c.get(url, headers={"if-none-match": etag})).status_code == 304


async def test_download_wav_is_the_file(site: Site) -> None:
    rec_id = site.recs["alice"]
    async with site.client("listener") as c:
        r = await c.get(f"/api/v1/recordings/{rec_id}/download")
    assert r.status_code == 200 and r.content == file_bytes(site, rec_id)
    disposition = r.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="out_3001_2011_0c383e0e709a_')
    assert disposition.endswith(".wav")


@needs_ffmpeg
async def test_download_converted_formats(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoded in the server by PyAV: no FFmpeg program on its PATH (as after `make run`).
    Each decodes to the WAV's length; FLAC to its very samples."""
    rec_id = site.recs["ivan"]
    rec = site.catalog.get(rec_id)
    assert rec is not None
    original, rate = soundfile.read(str(site.server.root / rec.path), dtype="int16")
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg is not None
    monkeypatch.setenv("PATH", "/nonexistent")
    got = {}
    async with site.client("listener") as c:
        for name, media_type in (
            ("flac", "audio/flac"),
            ("opus", "audio/ogg"),
            ("mp3", "audio/mpeg"),
        ):
            r = await c.get(f"/api/v1/recordings/{rec_id}/download", params={"format": name})
            assert r.status_code == 200 and r.headers["content-type"] == media_type
            assert "content-length" not in r.headers  # streamed as it is encoded
            assert r.headers["content-disposition"].endswith(f".{name}")
            assert r.headers["cache-control"] == "private, no-store"
            got[name] = r.content
        bad = await c.get(f"/api/v1/recordings/{rec_id}/download", params={"format": "aiff"})
        assert bad.status_code == 400
    monkeypatch.undo()

    decoded, flac_rate = soundfile.read(io.BytesIO(got["flac"]), dtype="int16")
    assert flac_rate == rate == 16000
    np.testing.assert_array_equal(decoded, original)  # lossless
    assert got["opus"][:4] == b"OggS" and b"OpusHead" in got["opus"][:100]
    for name in ("opus", "mp3"):
        read, read_rate = soundfile.read(io.BytesIO(got[name]), dtype="int16")
        assert read_rate == rate and len(read) == len(original), name
    path = site.server.root / "download-check.mp3"
    path.write_bytes(got["mp3"])
    try:
        pcm = subprocess.run(
            [ffmpeg, "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    finally:
        path.unlink()
    assert len(pcm) // 2 == len(original)  # not 80-200 ms longer (issue 15)


async def test_peaks(site: Site) -> None:
    async with site.client("listener") as c:
        r = await c.get(f"/api/v1/recordings/{site.recs['alice']}/peaks", params={"buckets": 100})
    data = r.json()
    assert data["sample_rate"] == 8000 and data["duration"] == pytest.approx(2.0)
    assert len(data["peaks"]) == 100
    assert all(-1 <= lo <= hi <= 1 for lo, hi in data["peaks"])
    # The test signal is loud all through: every slice has a real swing.
    assert min(hi - lo for lo, hi in data["peaks"]) > 0.5


# -- bulk download -------------------------------------------------------------------------


async def test_zip_of_a_selection(site: Site) -> None:
    chosen = [site.recs["alice"], site.recs["bob"], 999_999]
    async with site.client("listener") as c:
        r = await c.post("/api/v1/recordings/bulk-download", json={"ids": chosen})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert "content-length" not in r.headers  # streamed
    assert r.headers["content-disposition"].startswith('attachment; filename="recordings-')
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    assert archive.testzip() is None
    wavs = [i for i in archive.infolist() if i.filename.endswith(".wav")]
    assert len(wavs) == 2 and all(i.compress_type == zipfile.ZIP_STORED for i in wavs)
    for rec_id in chosen[:2]:
        rec = site.catalog.get(rec_id)
        assert rec is not None
        assert archive.read(rec.path) == file_bytes(site, rec_id)
    index = list(csv.DictReader(io.StringIO(archive.read("index.csv").decode())))
    assert sorted(int(row["id"]) for row in index) == sorted(chosen[:2])
    assert {row["remote_name"] for row in index} == {"Alice Example", "Bob Builder"}


async def test_zip_of_a_search(site: Site) -> None:
    async with site.client("admin") as c:
        r = await c.get("/api/v1/recordings/bulk-download", params={"codec": "PCMA"})
    assert r.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    expected = {site.catalog.get(site.recs[n]).path for n in ("alice", "carol")}  # type: ignore[union-attr]
    assert set(names) == expected | {"index.csv"}


async def test_zip_limits(site: Site) -> None:
    async with site.client("admin") as c:
        r = await c.post("/api/v1/recordings/bulk-download", json={"ids": []})
        assert r.status_code == 422
        r = await c.post("/api/v1/recordings/bulk-download", json={"ids": [999_998]})
        assert r.status_code == 404


# -- permissions ---------------------------------------------------------------------------


async def test_listener_cannot_delete_or_administer(site: Site) -> None:
    rec_id = site.recs["alice"]
    async with site.client("listener") as c:
        r = await c.delete(f"/api/v1/recordings/{rec_id}")
        assert r.status_code == 403 and r.json()["detail"] == "this needs the admin role"
        for path in ("/api/v1/users", "/api/v1/audit", "/api/v1/audit.csv"):
            assert (await c.get(path)).status_code == 403
    assert site.catalog.get(rec_id) is not None
    assert (site.server.root / site.catalog.get(rec_id).path).is_file()  # type: ignore[union-attr]


async def test_restricted_users_see_only_their_calls(site: Site) -> None:
    bob, alice, carol = site.recs["bob"], site.recs["alice"], site.recs["carol"]
    page = await search(site, "ext3002")
    assert ids(page) == [bob] and page["total"] == 1
    assert (await search(site, "ext3002", q="2011"))["total"] == 0
    assert ids(await search(site, "devC")) == [carol]
    async with site.client("ext3002") as c:
        for path in (
            f"/api/v1/recordings/{alice}",
            f"/api/v1/recordings/{alice}/audio",
            f"/api/v1/recordings/{alice}/download",
            f"/api/v1/recordings/{alice}/peaks",
            f"/api/v1/recordings/{alice}/notes",
            f"/recordings/{alice}",
        ):
            r = await c.get(path)
            assert r.status_code == 404, path
        assert (await c.put(f"/api/v1/recordings/{alice}/tags/mine")).status_code == 404
        r = await c.post("/api/v1/recordings/bulk-download", json={"ids": [alice, bob]})
        names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
        assert names == [site.catalog.get(bob).path, "index.csv"]  # type: ignore[union-attr]
        assert (await c.get(f"/api/v1/recordings/{bob}/audio")).status_code == 200


# -- notes, tags, audit --------------------------------------------------------------------


async def test_notes_tags_and_their_audit(site: Site) -> None:
    rec_id = site.recs["bob"]
    async with site.client("listener") as c:
        r = await c.post(f"/api/v1/recordings/{rec_id}/notes", json={"text": "Customer angry"})
        assert r.status_code == 201
        note = r.json()
        assert note["username"] == "lisa" and note["text"] == "Customer angry"
        assert (await c.put(f"/api/v1/recordings/{rec_id}/tags/Complaint")).status_code == 204
        assert (await c.put(f"/api/v1/recordings/{rec_id}/tags/complaint")).status_code == 204
        assert (await c.put(f"/api/v1/recordings/{rec_id}/tags/training")).status_code == 204
        bad = await c.put(f"/api/v1/recordings/{rec_id}/tags/two%20words")
        assert bad.status_code == 400 and "must be one word" in bad.json()["detail"]
        detail = (await c.get(f"/api/v1/recordings/{rec_id}")).json()
        assert detail["tags"] == ["complaint", "training"]
        notes = (await c.get(f"/api/v1/recordings/{rec_id}/notes")).json()
        assert [n["text"] for n in notes] == ["Customer angry"]
        tagged = await c.get("/api/v1/recordings", params={"tag": "complaint"})
        assert ids(tagged.json()) == [rec_id]
        assert (await c.delete(f"/api/v1/recordings/{rec_id}/tags/training")).status_code == 204
        tags = (await c.get("/api/v1/tags")).json()
        assert {"tag": "complaint", "count": 1} in tags
        assert all(t["tag"] != "training" for t in tags)
    async with site.client("ext3002") as c:
        # Another listener may not delete Lisa's note; an admin may.
        assert (await c.delete(f"/api/v1/notes/{note['id']}")).status_code == 403
    async with site.client("admin") as c:
        assert (await c.delete(f"/api/v1/notes/{note['id']}")).status_code == 204
        log = (await c.get("/api/v1/audit", params={"recording_id": rec_id})).json()
    actions = [(e["action"], e["username"]) for e in log]
    assert ("note_add", "lisa") in actions and ("note_delete", "admin") in actions
    assert actions.count(("tag_add", "lisa")) == 2  # the repeat changed nothing
    assert ("tag_remove", "lisa") in actions
    entry = next(e for e in log if e["action"] == "note_add")
    assert entry["client_address"] == "127.0.0.1" and entry["detail"]["text"] == "Customer angry"


async def test_play_download_and_zip_are_audited(site: Site) -> None:
    rec_id = site.recs["carol"]
    async with site.client("devC") as c:
        await c.get(f"/api/v1/recordings/{rec_id}/audio", headers={"range": "bytes=0-"})
        await c.get(f"/api/v1/recordings/{rec_id}/audio", headers={"range": "bytes=2000-"})
        await c.get(f"/api/v1/recordings/{rec_id}/download")
        await c.post("/api/v1/recordings/bulk-download", json={"ids": [rec_id]})
    async with site.client("admin") as c:
        log = (await c.get("/api/v1/audit", params={"username": "devc"})).json()
        export = await c.get("/api/v1/audit.csv", params={"username": "devc"})
    actions = [e["action"] for e in log]
    # A seek (range not from byte 0) is not another play.
    assert actions.count("play") == 1
    assert "download" in actions and "bulk_download" in actions
    bulk = next(e for e in log if e["action"] == "bulk_download")
    assert bulk["detail"]["recordings"] == [rec_id]
    assert all(e["client_address"] == "127.0.0.1" for e in log)
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [r["action"] for r in rows] == actions
    assert rows[0]["username"] == "devc"


async def test_admin_deletes_a_recording_and_its_file(site: Site) -> None:
    rec_id = await site.record(
        codec="PCMA", seconds=0.5, session_id="30001", local_number="3009", remote_number="1"
    )
    rec = site.catalog.get(rec_id)
    assert rec is not None
    path = site.server.root / rec.path
    assert path.is_file()
    async with site.client("admin") as c:
        await c.post(f"/api/v1/recordings/{rec_id}/notes", json={"text": "to go"})
        await c.put(f"/api/v1/recordings/{rec_id}/tags/gone")
        assert (await c.delete(f"/api/v1/recordings/{rec_id}")).status_code == 204
        assert not path.exists()
        assert (await c.get(f"/api/v1/recordings/{rec_id}")).status_code == 404
        assert (await c.delete(f"/api/v1/recordings/{rec_id}")).status_code == 404
        log = (await c.get("/api/v1/audit", params={"action": "delete"})).json()
    assert log[0]["recording_id"] == rec_id and log[0]["detail"]["path"] == rec.path
    assert log[0]["detail"]["sha256"] == rec.sha256
    assert site.catalog.notes(rec_id) == [] and site.catalog.tags_of([rec_id]) == {}


# -- live ----------------------------------------------------------------------------------


async def read_snapshot(lines: AsyncIterator[str]) -> list[dict]:
    event = None
    async for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "snapshot":
            data: list[dict] = json.loads(line[6:])
            return data
    raise AssertionError("the stream ended without a snapshot")


async def test_live_sessions_and_events(site: Site) -> None:
    call = PhoneCall(
        "127.0.0.1",
        site.server.control_port,
        session_id="40001",
        codec="PCMU",
        local_number="3002",
        remote_number="555",
    )
    async with site.client("admin") as admin, site.client("devC") as other:
        async with admin.stream("GET", "/api/v1/live/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            assert await read_snapshot(lines) == []
            assert (await call.start())["result"] == "success"
            try:
                snapshot = await read_snapshot(lines)
                while not snapshot:  # the next one comes at once, or within a second
                    snapshot = await read_snapshot(lines)
                assert [s["session_id"] for s in snapshot] == ["40001"]
                live = (await admin.get("/api/v1/live")).json()
                assert live[0]["session_id"] == "40001" and live[0]["codec"] == "PCMU"
                assert live[0]["local_number"] == "3002"
                assert (await other.get("/api/v1/live")).json() == []
                async with site.client("ext3002") as mine:
                    assert len((await mine.get("/api/v1/live")).json()) == 1
                r = await admin.delete(f"/api/v1/recordings/{live[0]['rec_id']}")
                assert r.status_code == 409 and "still recording" in r.json()["detail"]
            finally:
                await call.stop("hangup")
                await call.close()
            snapshot = await read_snapshot(lines)
            while snapshot:
                snapshot = await read_snapshot(lines)
        assert (await admin.get("/api/v1/live")).json() == []


# -- metrics -------------------------------------------------------------------------------


async def test_metrics(site: Site) -> None:
    async with site.client("admin") as c:
        await c.get("/api/v1/recordings")
    async with site.client() as c:
        r = await c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    values: dict[str, float] = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values["callrec_sessions_active"] == 0
    assert values["callrec_sessions_total"] >= len(CALLS)
    assert values["callrec_packets_received_total"] >= 100 + 50 + 150 + 25
    assert values["callrec_packets_lost_total"] == 0
    # The calls' phones kept their source port and SSRC; no call ended for lack of RTP.
    assert values["callrec_media_latch_changes_total"] == 0
    assert values["callrec_media_ssrc_changes_total"] == 0
    assert values['callrec_recordings_ended_total{reason="rtp_timeout"}'] == 0
    assert values["callrec_audio_bytes_written_total"] >= 2 * (16000 + 8000 + 48000 + 4000)
    assert values['callrec_recordings{status="complete"}'] >= len(CALLS)
    key = 'callrec_http_requests_total{method="GET",route="/api/v1/recordings",status="200"}'
    assert values[key] >= 1


async def test_openapi_and_reference(site: Site) -> None:
    async with site.client() as c:
        spec = (await c.get("/api/openapi.json")).json()
        docs = await c.get("/api/docs")
    for path in (
        "/api/v1/recordings",
        "/api/v1/recordings/{rec_id}/audio",
        "/api/v1/recordings/bulk-download",
        "/api/v1/live/events",
        "/api/v1/audit.csv",
    ):
        assert path in spec["paths"], path
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert docs.status_code == 200 and "/api/v1/recordings/{rec_id}/peaks" in docs.text
    assert "cdn" not in docs.text.lower()  # self-contained: works without internet


async def test_tokens_and_users_over_the_api(site: Site) -> None:
    async with site.client("admin") as admin:
        r = await admin.post(
            "/api/v1/users",
            json={"username": "Temp", "password": "temporary-pw-1", "extensions": ["3001"]},
        )
        assert r.status_code == 201 and r.json()["username"] == "temp"
        user_id = r.json()["id"]
        dup = await admin.post("/api/v1/users", json={"username": "temp", "password": "x" * 9})
        assert dup.status_code == 400 and "already exists" in dup.json()["detail"]
        short = await admin.post("/api/v1/users", json={"username": "t2", "password": "short"})
        assert short.status_code == 400 and "at least 8" in short.json()["detail"]
        r = await admin.patch(f"/api/v1/users/{user_id}", json={"extensions": ["3003"]})
        assert r.json()["extensions"] == ["3003"]
        me = (await admin.get("/api/v1/me")).json()
        last = await admin.patch(f"/api/v1/users/{me['id']}", json={"role": "listener"})
        assert last.status_code == 400 and "last admin" in last.json()["detail"]
    # The new user makes a token for a script, uses it, and revokes it.
    login = await sign_in(site, "temp", "temporary-pw-1")
    try:
        csrf = await csrf_of(login)
        # One that never expires: the session re-enters the password.
        r = await login.post(
            "/api/v1/tokens",
            json={"name": "cron", "password": "temporary-pw-1"},
            headers={"x-csrf-token": csrf},
        )
        assert r.status_code == 201 and r.json()["expires_at"] is None
        token = r.json()["token"]
        assert token.startswith("crt_") and r.json()["prefix"] == token[:10]
    finally:
        await login.aclose()
    async with httpx.AsyncClient(
        base_url=site.base, headers={"authorization": f"Bearer {token}"}
    ) as script:
        assert ids((await script.get("/api/v1/recordings")).json()) == [site.recs["carol"]]
        token_id = (await script.get("/api/v1/tokens")).json()[0]["id"]
        assert (await script.delete(f"/api/v1/tokens/{token_id}")).status_code == 204
        assert (await script.get("/api/v1/recordings")).status_code == 401
    async with site.client("admin") as admin:
        assert (await admin.delete(f"/api/v1/users/{user_id}")).status_code == 204
        names = [u["username"] for u in (await admin.get("/api/v1/users")).json()]
    assert "temp" not in names


# -- browser sessions: cookies, CSRF, sign-in ----------------------------------------------


async def sign_in(site: Site, username: str, password: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=site.base, timeout=30)
    form = await client.get("/login")
    token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    r = await client.post(
        "/login",
        data={"username": username, "password": password, "csrf": token, "next": "/recordings"},
    )
    assert r.status_code == 303, r.text
    return client


async def csrf_of(client: httpx.AsyncClient) -> str:
    page = await client.get("/account")
    return page.text.split('data-csrf="', 1)[1].split('"', 1)[0]


async def test_session_cookie_flags_and_csrf(site: Site) -> None:
    client = httpx.AsyncClient(base_url=site.base, timeout=30)
    async with client:
        form = await client.get("/login")
        token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = await client.post(
            "/login",
            data={"username": "lisa", "password": "listener-password-1", "csrf": token},
        )
        assert r.status_code == 303 and r.headers["location"] == "/recordings"
        cookie = next(h for h in r.headers.get_list("set-cookie") if "callrec_session=" in h)
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        rec_id = site.recs["alice"]
        # Reads work with the cookie alone.
        assert (await client.get(f"/api/v1/recordings/{rec_id}")).status_code == 200
        # Changes need the CSRF token: header for the API, field for forms.
        url = f"/api/v1/recordings/{rec_id}/notes"
        r = await client.post(url, json={"text": "x"})
        assert r.status_code == 403 and "CSRF" in r.json()["detail"]
        r = await client.post(url, json={"text": "x"}, headers={"x-csrf-token": "wrong"})
        assert r.status_code == 403
        csrf = await csrf_of(client)
        r = await client.post(url, json={"text": "with token"}, headers={"x-csrf-token": csrf})
        assert r.status_code == 201
        r = await client.post(f"/recordings/{rec_id}/notes", data={"text": "form, no token"})
        assert r.status_code == 403
        r = await client.post(
            f"/recordings/{rec_id}/notes", data={"text": "form note", "csrf": csrf}
        )
        assert r.status_code == 303
        assert "form note" in (await client.get(f"/recordings/{rec_id}")).text
        # Signing out ends the session on the server, not only in the browser.
        stolen = client.cookies["callrec_session"]
        assert (await client.post("/logout", data={"csrf": csrf})).status_code == 303
    async with httpx.AsyncClient(base_url=site.base, cookies={"callrec_session": stolen}) as replay:
        assert (await replay.get("/api/v1/me")).status_code == 401


async def test_sign_in_failures_are_audited_and_throttled(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.base, timeout=30) as client:
        # The form's CSRF cookie must match its field.
        r = await client.post("/login", data={"username": "admin", "password": "x", "csrf": "1"})
        assert r.status_code == 400
        for attempt in range(site.web.app.state.ctx.throttle.limit):
            form = await client.get("/login")
            token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            r = await client.post(
                "/login", data={"username": "ghost", "password": "nope", "csrf": token}
            )
            assert r.status_code == 401, attempt
            assert "Wrong user name or password." in r.text
        form = await client.get("/login")
        token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = await client.post(
            "/login", data={"username": "ghost", "password": "nope", "csrf": token}
        )
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 300
    failures = site.catalog.audit_entries(action="sign_in_failed", username="ghost", limit=100)
    assert len(failures) == site.web.app.state.ctx.throttle.limit + 1
    assert failures[0].detail == {"reason": "throttled"}
    assert failures[-1].detail == {"reason": "unknown user"}
    assert failures[0].client_address == "127.0.0.1" and failures[0].user_id is None
    site.web.app.state.ctx.throttle._failures.clear()


async def test_redirect_after_sign_in_stays_on_this_site(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.base, timeout=30) as client:
        for target, expected in [
            ("/recordings?q=3001", "/recordings?q=3001"),
            ("//evil.example/", "/recordings"),
            ("https://evil.example/", "/recordings"),
        ]:
            form = await client.get("/login", params={"next": target})
            token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            r = await client.post(
                "/login",
                data={
                    "username": "lisa",
                    "password": "listener-password-1",
                    "csrf": token,
                    "next": target,
                },
            )
            assert r.headers["location"] == expected
            client.cookies.clear()


async def test_security_headers(site: Site) -> None:
    async with site.client("admin") as c:
        r = await c.get("/recordings")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_recording_page_shows_times_for_the_browser(site: Site) -> None:
    rec = site.catalog.get(site.recs["alice"])
    assert rec is not None
    async with site.client("listener") as c:
        page = (await c.get(f"/recordings/{rec.id}")).text
    iso = rec.start_time.astimezone(UTC).isoformat()
    assert f'<time datetime="{iso}"' in page
    assert "Alice Example" in page and "Packets received" in page
    assert f"/api/v1/recordings/{rec.id}/download?format=flac" in page
    assert "Delete recording" not in page  # listeners get no delete button


async def test_list_page_is_scoped_and_shows_bad_filters(site: Site) -> None:
    async with site.client("ext3002") as c:
        page = await c.get("/recordings")
        assert page.status_code == 200
        assert "Bob Builder" in page.text and "Alice Example" not in page.text
        assert site.catalog.get(site.recs["carol"]).device not in page.text  # type: ignore[union-attr]
        bad = await c.get("/recordings", params={"since": "soon"})
        assert bad.status_code == 200 and "is not a date" in bad.text
        assert (await c.get("/admin/users")).status_code == 403
