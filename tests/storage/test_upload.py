"""Recordings go to a real S3 server (SeaweedFS): uploaded by jobs, verified, recorded in the
catalogue, and only then removed from the local disk; the bucket is made when missing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from callrec.catalog.objects import ObjectQueries
from callrec.storage import StorageLocation
from callrec.storage.client import ObjectStore, StorageError
from callrec.storage.files import upload_recording
from tests.support.s3 import WeedS3
from tests.support.waiting import wait_for
from tests.support.web import CALLS, start_site, stop_site


@pytest.mark.parametrize("verify", ["checksum", "read"])
async def test_a_finished_recording_is_uploaded_verified_and_its_local_copy_removed(
    tmp_path: Path, weed: WeedS3, bucket: str, verify: str
) -> None:
    assert bucket not in weed.buckets()
    site = await start_site(
        tmp_path,
        **weed.settings(bucket),
        storage_verify=verify,
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


def test_the_store_refuses_bytes_that_do_not_match_the_checksum_sent(
    tmp_path: Path, weed: WeedS3, bucket: str
) -> None:
    settings = weed.settings(bucket)
    store = ObjectStore(
        StorageLocation.parse(str(settings["storage_url"])),
        endpoint=weed.endpoint,
        access_key=str(settings["storage_access_key"]),
        secret_key=str(settings["storage_secret_key"]),
    )
    assert store.ensure_bucket() is True  # made when missing, once
    assert store.ensure_bucket() is False
    path = tmp_path / "a.wav"
    path.write_bytes(b"RIFF" + bytes(1000))
    right = hashlib.sha256(path.read_bytes()).hexdigest()
    assert store.put_file(path, "callrec/u/a.wav", sha256=right) == right
    with pytest.raises(StorageError, match="BadDigest"):
        store.put_file(path, "callrec/u/b.wav", sha256=hashlib.sha256(b"other").hexdigest())
    assert not store.exists("callrec/u/b.wav")
    assert store.sha256("callrec/u/a.wav") == (right, 1004)
    part = store.read("callrec/u/a.wav", 2, 5)
    assert (part.size, part.length, b"".join(part.body)) == (1004, 4, b"FF\0\0")


@pytest.mark.parametrize("verify", ["checksum", "read"])
async def test_the_catalogued_sha256_is_what_the_upload_is_verified_against(
    tmp_path: Path, weed: WeedS3, bucket: str, verify: str
) -> None:
    # The recording's SHA-256 was taken when it finished: the upload does not hash the file
    # again, and a file changed on disk since (same size) is refused, never recorded.
    site = await start_site(tmp_path)  # no store: nothing uploads by itself
    try:
        rec_id = await site.record(**CALLS["alice"])
        rec = site.catalog.get(rec_id)
        assert rec is not None and rec.sha256 is not None
        settings = weed.settings(bucket)
        store = ObjectStore(
            StorageLocation.parse(str(settings["storage_url"])),
            endpoint=weed.endpoint,
            access_key=str(settings["storage_access_key"]),
            secret_key=str(settings["storage_secret_key"]),
        )
        root = site.server.root
        result = upload_recording(store, root, rec, verify=verify)
        (audio,) = [o for o in result.objects if o.role == "audio"]
        assert (audio.sha256, audio.size) == (rec.sha256, rec.size_bytes)
        assert hashlib.sha256(weed.get(bucket, audio.key)).hexdigest() == rec.sha256
        path = root / rec.path
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF  # one byte flipped: the same size, other bytes
        path.write_bytes(bytes(data))
        with pytest.raises(StorageError):
            upload_recording(store, root, rec, verify=verify)
        # Another size: hashed here, as before (nothing to reuse).
        path.write_bytes(bytes(data) + b"\0\0")
        other = upload_recording(store, root, rec, verify=verify)
        (moved,) = [o for o in other.objects if o.role == "audio"]
        assert moved.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() != rec.sha256
    finally:
        await stop_site(site)
