"""An object store that goes away never stops recording: calls finish while it is down, the
uploads wait (the backlog and its age on /health and /metrics), and once it is back they
catch up, nothing lost."""

from __future__ import annotations

import hashlib
from pathlib import Path

from callrec.catalog import JobInfo, JobStore
from callrec.catalog.objects import ObjectQueries
from tests.support.s3 import WeedS3
from tests.support.waiting import wait_for
from tests.support.web import CALLS, start_site, stop_site


async def test_calls_finish_while_the_store_is_down_and_uploads_catch_up(
    tmp_path: Path, own_weed: WeedS3
) -> None:
    bucket = "outage"
    site = await start_site(
        tmp_path, **own_weed.settings(bucket), storage_local_keep_days=0, job_poll_interval=0.2
    )
    try:
        objects = ObjectQueries(site.catalog)
        first = await site.record(**CALLS["alice"])
        await wait_for(
            lambda: objects.object_for(first, site.catalog.get(first).path),  # type: ignore[union-attr]
            what="the first upload",
            timeout=30,
        )
        own_weed.kill()
        ids = []
        for n, name in enumerate(("bob", "ivan", "carol")):
            ids.append(await site.record(**{**CALLS[name], "session_id": f"down{n}"}))
        # Recorded, catalogued and kept on the disk: nothing waits for the store.
        recs = [site.catalog.get(i) for i in ids]
        assert all(r is not None and r.status == "complete" for r in recs)
        hashes = {r.id: r.sha256 for r in recs if r is not None}
        assert all((site.server.root / r.path).exists() for r in recs if r is not None)
        async with site.client() as client:

            async def backlog() -> dict[str, object]:
                answer = await client.get("/health")
                return dict(answer.json()["storage"])

            seen = await backlog()
            assert seen["backlog"] == 3
            assert isinstance(seen["oldest_age"], float) and seen["oldest_age"] >= 0
            # The store is down, recording is not: the server stays ok for load balancers.
            assert (await client.get("/health")).json()["status"] == "ok"
        async with site.client("admin") as client:
            metrics = (await client.get("/metrics")).text
        assert "callrec_storage_backlog 3.0" in metrics
        assert "callrec_storage_oldest_unuploaded_seconds" in metrics
        # The uploads were tried, failed, and wait for their retries.
        store = JobStore(site.catalog)

        def failed() -> list[JobInfo]:
            return [
                j
                for j in store.list_jobs(kind="storage.upload")
                if j.state == "queued" and j.last_error
            ]

        waiting = await wait_for(
            lambda: len(failed()) == 3 and failed(), what="three failed uploads", timeout=30
        )
        assert all(
            "upload of" in (j.last_error or "") or "reach" in (j.last_error or "") for j in waiting
        ), [j.last_error for j in waiting]
        own_weed.start()

        def caught_up() -> bool:
            return objects.backlog().count == 0

        await wait_for(caught_up, what="the uploads to catch up", timeout=90, interval=0.5)
        for rec_id, sha in hashes.items():
            (audio,) = [o for o in objects.objects_of(rec_id) if o.role == "audio"]
            assert audio.sha256 == sha
            assert hashlib.sha256(own_weed.get(bucket, audio.key)).hexdigest() == sha
        async with site.client() as client:
            assert (await client.get("/health")).json()["storage"]["backlog"] == 0
    finally:
        await stop_site(site)
