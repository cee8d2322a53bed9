"""Recordings whose local copy is gone are played (with Range), downloaded in every format,
put in ZIPs and drawn from a real S3 server through the web server; deleting one deletes its
objects."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from pathlib import Path

import soundfile
from typer.testing import CliRunner

from callrec.catalog import JobStore
from callrec.catalog.objects import ObjectQueries
from callrec.cli import app
from tests.support.s3 import WeedS3
from tests.support.waiting import wait_for
from tests.support.web import CALLS, Site, start_site, stop_site


async def _uploaded_and_evicted(site: Site, rec_id: int) -> None:
    objects = ObjectQueries(site.catalog)

    def evicted() -> bool:
        return any(
            o.role == "audio" and o.local_removed_at is not None for o in objects.objects_of(rec_id)
        )

    def why() -> str:
        jobs = JobStore(site.catalog).list_jobs(kind="storage.upload")
        return "the upload and the local copy's removal; jobs: " + "; ".join(
            f"{j.state} {j.last_error}" for j in jobs
        )

    await wait_for(evicted, what=why, timeout=30)


async def test_playback_range_downloads_zip_and_peaks_come_from_the_store(
    tmp_path: Path, weed: WeedS3, bucket: str
) -> None:
    site = await start_site(
        tmp_path, **weed.settings(bucket), storage_local_keep_days=0, job_poll_interval=0.2
    )
    try:
        rec_id = await site.record(**CALLS["alice"])
        rec = site.catalog.get(rec_id)
        assert rec is not None
        original = (site.server.root / rec.path).read_bytes()
        await _uploaded_and_evicted(site, rec_id)
        assert not (site.server.root / rec.path).exists()
        async with site.client("listener") as client:
            whole = await client.get(f"/api/v1/recordings/{rec_id}/audio")
            assert whole.status_code == 200
            assert whole.content == original
            assert whole.headers["accept-ranges"] == "bytes"
            # A seek: the bytes of the range, from the store's ranged GET.
            part = await client.get(
                f"/api/v1/recordings/{rec_id}/audio", headers={"range": "bytes=1000-2999"}
            )
            assert part.status_code == 206
            assert part.headers["content-range"] == f"bytes 1000-2999/{len(original)}"
            assert part.content == original[1000:3000]
            tail = await client.get(
                f"/api/v1/recordings/{rec_id}/audio", headers={"range": "bytes=-100"}
            )
            assert tail.status_code == 206 and tail.content == original[-100:]
            beyond = await client.get(
                f"/api/v1/recordings/{rec_id}/audio",
                headers={"range": f"bytes={len(original)}-"},
            )
            assert beyond.status_code == 416
            # A conditional request with the object's validator.
            again = await client.get(
                f"/api/v1/recordings/{rec_id}/audio",
                headers={"if-none-match": whole.headers["etag"]},
            )
            assert again.status_code == 304
            wav = await client.get(f"/api/v1/recordings/{rec_id}/download")
            assert wav.status_code == 200 and wav.content == original
            assert "attachment" in wav.headers["content-disposition"]
            flac = await client.get(f"/api/v1/recordings/{rec_id}/download?format=flac")
            assert flac.status_code == 200
            decoded, rate = soundfile.read(io.BytesIO(flac.content), dtype="int16")
            expected, _ = soundfile.read(io.BytesIO(original), dtype="int16")
            assert rate == rec.sample_rate
            assert (decoded == expected).all()
            peaks = await client.get(f"/api/v1/recordings/{rec_id}/peaks?buckets=50")
            assert peaks.status_code == 200 and len(peaks.json()["peaks"]) == 50
            bundle = await client.post("/api/v1/recordings/bulk-download", json={"ids": [rec_id]})
            assert bundle.status_code == 200
            archive = zipfile.ZipFile(io.BytesIO(bundle.content))
            assert archive.testzip() is None
            assert archive.read(rec.path) == original
            assert "MISSING.txt" not in archive.namelist()
        # The fetched copies of the FLAC download and the peaks were removed.
        assert not any((site.server.root / ".callrec" / "fetch").glob("*"))
    finally:
        await stop_site(site)


async def test_a_local_copy_is_served_from_disk_and_deleting_removes_the_objects(
    tmp_path: Path, weed: WeedS3, bucket: str
) -> None:
    site = await start_site(
        tmp_path,
        **weed.settings(bucket),
        job_poll_interval=0.2,
        storage_sweep_interval=1.0,
    )
    try:
        rec_id = await site.record(**CALLS["bob"])
        rec = site.catalog.get(rec_id)
        assert rec is not None
        objects = ObjectQueries(site.catalog)
        await wait_for(lambda: objects.object_for(rec_id, rec.path), what="the upload", timeout=30)
        # Kept locally (no keep days, no size limit): served from the disk.
        assert (site.server.root / rec.path).exists()
        keys = {o.key for o in objects.objects_of(rec_id)}
        assert keys and keys <= weed.keys(bucket)
        async with site.client("listener") as client:
            got = await client.get(f"/api/v1/recordings/{rec_id}/audio")
            assert got.content == (site.server.root / rec.path).read_bytes()
        async with site.client("admin") as client:
            deleted = await client.delete(f"/api/v1/recordings/{rec_id}")
            assert deleted.status_code == 204
        await wait_for(
            lambda: not (keys & weed.keys(bucket)),
            what="the deleted recording's objects to go from the store",
            timeout=30,
            interval=0.2,
        )
        await wait_for(lambda: not objects.orphans(), what="the orphans' rows to go", timeout=10)
    finally:
        await stop_site(site)


async def test_verify_rehashes_in_the_store_when_the_local_copy_is_gone(
    tmp_path: Path, weed: WeedS3, bucket: str
) -> None:
    settings = weed.settings(bucket)
    site = await start_site(tmp_path, **settings, storage_local_keep_days=0, job_poll_interval=0.2)
    try:
        rec_id = await site.record(**CALLS["ivan"])
        await _uploaded_and_evicted(site, rec_id)
        rec = site.catalog.get(rec_id)
        assert rec is not None
        env = {
            "CALLREC_RECORDINGS_DIR": str(site.server.root),
            "CALLREC_DATABASE_URL": f"sqlite:///{tmp_path / 'catalog.db'}",
            **{f"CALLREC_{k.upper()}": str(v) for k, v in settings.items()},
        }
        fine = await asyncio.to_thread(
            CliRunner().invoke, app, ["verify", str(rec_id), "--json"], env=env
        )
        assert fine.exit_code == 0, fine.output
        assert json.loads(fine.output)["files"] == 1
        # The store's copy altered: verify says so, and that it checked the store's copy.
        (audio,) = [o for o in ObjectQueries(site.catalog).objects_of(rec_id) if o.role == "audio"]
        body = bytearray(weed.get(bucket, audio.key))
        body[500] ^= 0x01
        weed.client().put_object(Bucket=bucket, Key=audio.key, Body=bytes(body))  # type: ignore[attr-defined]
        bad = await asyncio.to_thread(
            CliRunner().invoke, app, ["verify", str(rec_id), "--json"], env=env
        )
        assert bad.exit_code == 1, bad.output
        (finding,) = json.loads(bad.output)["findings"]
        assert finding["kind"] == "altered"
        assert "object store" in finding["detail"]
        # The store's secret never shows in `config show` (its output ends up in bug reports).
        for args in (["config", "show"], ["config", "show", "--json"]):
            shown = CliRunner().invoke(app, args, env=env)
            assert shown.exit_code == 0, shown.output
            assert str(settings["storage_secret_key"]) not in shown.output
        assert json.loads(shown.output)["storage_secret_key"] == "***"
        assert json.loads(shown.output)["storage_access_key"] == settings["storage_access_key"]
    finally:
        await stop_site(site)
