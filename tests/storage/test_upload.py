"""Recordings go to a real S3 server (SeaweedFS): uploaded by jobs, verified, recorded in the
catalogue, and only then removed from the local disk; the bucket is made when missing."""

from __future__ import annotations

import hashlib
from pathlib import Path

from callrec.catalog.objects import ObjectQueries
from tests.support.s3 import WeedS3
from tests.support.waiting import wait_for
from tests.support.web import CALLS, start_site, stop_site


async def test_a_finished_recording_is_uploaded_verified_and_its_local_copy_removed(
    tmp_path: Path, weed: WeedS3, bucket: str
) -> None:
    assert bucket not in weed.buckets()
    site = await start_site(
        tmp_path,
        **weed.settings(bucket),
        storage_local_keep_days=0,
        job_poll_interval=0.2,
    )
    try:
        rec_id = await site.record(**CALLS["alice"])
        objects = ObjectQueries(site.catalog)

        def evicted() -> bool:
            return any(
                o.role == "audio" and o.local_removed_at is not None
                for o in objects.objects_of(rec_id)
            )

        # The local copy goes only after the upload was verified and recorded.
        await wait_for(evicted, what="the upload and the eviction", timeout=30, interval=0.1)
        rec = site.catalog.get(rec_id)
        assert rec is not None
        stored = {o.role: o for o in objects.objects_of(rec_id)}
        assert set(stored) == {"audio", "sidecar"}
        audio = stored["audio"]
        assert audio.key == f"callrec/{rec.uid}/{rec.path}"
        assert audio.sha256 == rec.sha256
        assert audio.local_removed_at is not None
        assert not (site.server.root / rec.path).exists()
        # The sidecar stays (a catalogue rebuild reads it) and is in the store too.
        assert (site.server.root / (rec.path + ".json")).exists()
        assert bucket in weed.buckets()
        assert weed.keys(bucket) == {audio.key, stored["sidecar"].key}
        body = weed.get(bucket, audio.key)
        assert hashlib.sha256(body).hexdigest() == rec.sha256
        assert len(body) == rec.size_bytes
    finally:
        await stop_site(site)
