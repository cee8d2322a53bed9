"""Retention and the disk quota inside ``callrec serve``: the periodic task sweeps, and
``/health`` and ``/metrics`` show the quota (a real server and web API on loopback)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from callrec.catalog import Catalog
from callrec.service import Service
from tests.support import retention
from tests.support.retention import files_of, ids, recording
from tests.support.settings import web_settings
from tests.support.waiting import wait_for


async def test_serve_sweeps_daily_and_reports_the_quota(tmp_path: Path) -> None:
    settings = web_settings(tmp_path, retention_days=30, disk_quota="3000")
    root = settings.recordings_dir
    root.mkdir(parents=True)
    shift = (datetime.now(UTC) - retention.NOW) / timedelta(days=1)
    with Catalog(settings.database_url) as catalog:
        catalog.migrate()
        old = recording(catalog, root, 1, age_days=31 - shift, size=1000)
        held = recording(catalog, root, 2, age_days=400 - shift, size=1000)
        kept = recording(catalog, root, 3, age_days=2 - shift, size=1700)
        catalog.add_hold("recording", recording_ids=[held], reason="case", by="anna")
    server = Service(settings)
    assert server.retention is not None
    server.retention.first_sweep = 0.0
    await server.start()
    try:
        await wait_for(lambda: server.retention and server.retention.sweeps, what="a sweep")
        assert ids(server.catalog) == {held, kept}
        assert files_of(root, 1) == []
        (tomb,) = server.catalog.tombstones()
        assert (tomb.recording_id, tomb.deleted_by) == (old, "retention")
        # 2700 of 3000 bytes: 90%, a warning.
        assert server.web is not None
        async with httpx.AsyncClient(base_url=server.web.url) as client:
            health = (await client.get("/api/v1/health")).json()
            metrics = (await client.get("/metrics")).text
        assert health["status"] == "ok"
        assert health["disk_quota"] == {
            "state": "warning",
            "limit_bytes": 3000,
            "used_bytes": 2700,
            "used_ratio": 0.9,
        }
        assert "callrec_disk_quota_used_ratio 0.9" in metrics
    finally:
        await server.stop()


async def test_no_quota_no_quota_part(tmp_path: Path) -> None:
    server = Service(web_settings(tmp_path))
    await server.start()
    try:
        assert server.web is not None
        async with httpx.AsyncClient(base_url=server.web.url) as client:
            health = (await client.get("/api/v1/health")).json()
            metrics = (await client.get("/metrics")).text
        assert health["disk_quota"] is None
        assert "callrec_disk_quota_used_ratio" not in metrics
    finally:
        await server.stop()


async def test_a_rebuild_does_not_bring_back_a_half_deleted_recording(tmp_path: Path) -> None:
    from callrec.engine.rebuild import rebuild_catalogue
    from callrec.retention import sweep
    from tests.support.settings import server_settings
    from tests.support.web import make_call

    settings = server_settings(tmp_path)
    server = Service(settings)
    await server.start()
    try:
        gone = await make_call(server, codec="PCMA", seconds=0.2, session_id="71001")
        kept = await make_call(server, codec="PCMA", seconds=0.2, session_id="71002")
    finally:
        await server.stop()
    root = settings.recordings_dir.resolve()
    with Catalog(settings.database_url) as catalog:
        rec, _tomb = catalog.retire_recording(gone, by="anna")  # and "crashed": files stay
        assert (root / rec.path).is_file()
        report = rebuild_catalogue(catalog, root)
        assert (report.sidecars, report.added, report.without_sidecar) == (1, 0, [])
        assert ids(catalog) == {kept}
        sweep(catalog, settings, datetime.now(UTC))
        assert not (root / rec.path).exists()
        assert not (root / (rec.path + ".json")).exists()
        assert catalog.pending_tombstones() == []
