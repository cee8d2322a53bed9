"""The local cache of uploaded recordings: real files and a real catalogue (no store needed:
only verified rows make a file evictable). Copies past ``storage_local_keep_days`` go; past
``storage_cache_max_bytes`` the least recently used go first; never a file without a verified
object; the backlog counts finished recordings whose audio is not in the store."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from callrec.catalog import Catalog
from callrec.catalog.objects import OBJECTS, ObjectQueries, VerifiedObject
from callrec.catalog.records import utcnow
from callrec.config import ConfigError, Settings
from callrec.jobs.upload import evict
from tests.support.catalog import finish_values, new_recording


def _recordings(catalog: Catalog, root: Path, sizes: list[int]) -> list[int]:
    ids = []
    for n, size in enumerate(sizes):
        rec_id = catalog.create_recording(new_recording(n))
        catalog.finish_recording(rec_id, **finish_values())
        path = root / f"2026-03-01/in_{n}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * size)
        ids.append(rec_id)
    return ids


def _verified(objects: ObjectQueries, rec_id: int, n: int, size: int) -> None:
    path = f"2026-03-01/in_{n}.wav"
    assert objects.record_uploaded(
        rec_id,
        path,
        [VerifiedObject(role="audio", path=path, key=f"p/u{n}/{path}", size=size, sha256="0" * 64)],
    )


def test_least_recently_used_copies_go_first_and_unverified_ones_never(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        catalog.migrate()
        objects = ObjectQueries(catalog)
        ids = _recordings(catalog, root, [1000, 1000, 1000, 1000])
        assert objects.backlog().count == 4
        for n, rec_id in enumerate(ids[:3]):  # the fourth is not uploaded yet
            _verified(objects, rec_id, n, 1000)
        backlog = objects.backlog()
        assert backlog.count == 1 and backlog.oldest_end is not None
        # Played lately: 0 long ago, 1 just now, 2 in between.
        now = utcnow().timestamp()
        for n, age in ((0, 3000), (1, 10), (2, 600)):
            path = root / f"2026-03-01/in_{n}.wav"
            os.utime(path, (now - age, path.stat().st_mtime))
        report = evict(objects, root, keep_days=-1, max_bytes=1500)
        assert (report.removed, report.freed) == (2, 2000)
        present = {n for n in range(4) if (root / f"2026-03-01/in_{n}.wav").exists()}
        assert present == {1, 3}
        assert objects.cached_bytes() == 1000
        # Under the limit now: nothing more goes.
        assert evict(objects, root, keep_days=-1, max_bytes=1500).removed == 0


def test_copies_older_than_keep_days_go(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        catalog.migrate()
        objects = ObjectQueries(catalog)
        ids = _recordings(catalog, root, [10, 20])
        for n, rec_id in enumerate(ids):
            _verified(objects, rec_id, n, [10, 20][n])
        # The first was verified three days ago.
        with catalog.transaction("age a row", write=True) as session:
            session.connection().execute(
                update(OBJECTS)
                .where(OBJECTS.c.recording_id == ids[0])
                .values(uploaded_at=utcnow() - timedelta(days=3))
            )
        report = evict(objects, root, keep_days=2, max_bytes=None)
        assert (report.removed, report.freed) == (1, 10)
        assert not (root / "2026-03-01/in_0.wav").exists()
        assert (root / "2026-03-01/in_1.wav").exists()
        (gone,) = [o for o in objects.objects_of(ids[0])]
        assert gone.local_removed_at is not None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"storage_url": "http://bucket/x"}, "storage_url must be s3://bucket/prefix"),
        ({"storage_url": "s3://A_bucket/x"}, "is not a bucket name"),
        ({"storage_url": "s3://bucket/a//b"}, "empty or dot segment"),
        ({"storage_endpoint": "127.0.0.1:8333"}, "is not an http(s) URL"),
        ({"storage_access_key": "k"}, "must be given together"),
        ({"storage_cache_max_bytes": "lots"}, "storage_cache_max_bytes must be bytes"),
        ({"storage_timeout": 0}, "storage_timeout must be > 0"),
    ],
)
def test_bad_storage_settings_are_refused_with_a_reason(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings(**values)  # type: ignore[arg-type]


def test_each_node_counts_and_evicts_its_own_copies(tmp_path: Path) -> None:
    """One catalogue, two nodes' disks: a node's cache limit counts its own recordings'
    copies (and those of no node), and it removes only those."""
    root = tmp_path / "recordings"
    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        catalog.migrate()
        objects = ObjectQueries(catalog)
        ids = []
        for n, node in enumerate(("alpha", "beta", "beta")):
            rec_id = catalog.create_recording(new_recording(n, node=node))
            catalog.finish_recording(rec_id, **finish_values())
            path = root / f"2026-03-01/in_{n}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\0" * 1000)
            _verified(objects, rec_id, n, 1000)
            ids.append(rec_id)
        assert objects.cached_bytes() == 3000
        assert objects.cached_bytes(node="alpha") == 1000
        assert objects.cached_bytes(node="beta") == 2000
        # alpha's cache is under its limit: beta's copies do not count, and are not alpha's.
        assert evict(objects, root, keep_days=-1, max_bytes=1500, node="alpha").removed == 0
        assert evict(objects, root, keep_days=0, max_bytes=None, node="gamma").removed == 0
        assert all((root / f"2026-03-01/in_{n}.wav").exists() for n in range(3))
        report = evict(objects, root, keep_days=-1, max_bytes=1500, node="beta")
        assert (report.removed, report.freed) == (1, 1000)
        assert (root / "2026-03-01/in_0.wav").exists()
        assert objects.cached_bytes(node="beta") == 1000
        assert objects.cached_bytes(node="alpha") == 1000
