"""A recording's files and the object store: upload and verify, remove local copies, hash
the store's copy for ``callrec verify``.

Blocking, each function the work of one call on a worker thread (an upload job's, the
cache's, the web's). Nothing here writes the catalogue: the caller records what came back.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from callrec.catalog import Catalog
from callrec.catalog.objects import (
    AUDIO,
    ORIGINAL,
    SIDECAR,
    ObjectInfo,
    ObjectQueries,
    VerifiedObject,
    recording_files,
)
from callrec.catalog.records import RecordingInfo
from callrec.exceptions import CallrecError
from callrec.storage.client import ObjectStore, StorageError
from callrec.storage.location import owner_of

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024


class LocalFileMissing(CallrecError):
    """A file to upload is not on this machine's disk (removed by hand, or another node's)."""


class VerifyMismatch(StorageError):
    """What the store returned is not what was uploaded."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadResult:
    objects: list[VerifiedObject]
    bytes: int


def local_path(root: Path, path: str) -> Path:
    """The file at catalogued ``path`` under ``root``; ValueError for one that would leave it."""
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"{path!r} is not a path inside the recordings directory")
    return root / relative


def file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _local_sha256(path: Path, sha256: str | None, size: int | None) -> tuple[str, int]:
    """The file's SHA-256 and size: ``sha256`` (catalogued) when the file has ``size`` bytes
    (or any size when ``size`` is None), else hashed here."""
    if sha256 is not None:
        actual = path.stat().st_size
        if size is None or actual == size:
            return sha256, actual
    return file_sha256(path)


def upload_recording(
    store: ObjectStore, root: Path, rec: RecordingInfo, *, verify: str = "checksum"
) -> UploadResult:
    """Upload every file of ``rec`` (audio, companions, original, sidecar) and verify each
    against the local file's SHA-256: ``verify="checksum"`` sends the SHA-256 with the PUT
    (the store refuses other bytes) and accepts the store's answer when it names the same
    SHA-256, reading the object back otherwise; ``"read"`` always reads it back and hashes
    what the store returns. A missing sidecar is skipped (rows from before sidecars); a
    missing audio file raises :class:`LocalFileMissing`; a mismatch :class:`VerifyMismatch`
    (the object is left: the retry replaces it).

    The audio file's and the original's SHA-256 are the catalogue's (hashed when the
    recording finished) when the file still has the catalogued size: not read a second time
    (issue 17). Verified against them, the stored bytes are the ones the catalogue vouches
    for; a file changed on disk since fails verification and is retried, never recorded."""
    owner = owner_of(rec.uid, rec.id)
    known = {AUDIO: (rec.sha256, rec.size_bytes), ORIGINAL: (rec.original_sha256, None)}
    done: list[VerifiedObject] = []
    total = 0
    for role, path in recording_files(rec):
        source = local_path(root, path)
        try:
            local_sha, size = _local_sha256(source, *known.get(role, (None, None)))
        except FileNotFoundError as exc:
            if role == SIDECAR:
                continue
            raise LocalFileMissing(f"{path} is not on this machine's disk") from exc
        key = store.location.key(owner, path)
        named = store.put_file(source, key, sha256=local_sha if verify == "checksum" else None)
        if named == local_sha:
            # The store checked the bytes it received against our SHA-256 and names it.
            stored_sha, stored_size = named, size
        else:
            stored_sha, stored_size = store.sha256(key)
        if (stored_sha, stored_size) != (local_sha, size):
            raise VerifyMismatch(
                f"{key}: the store returned {stored_size} bytes with SHA-256 {stored_sha}, "
                f"not the {size} bytes with {local_sha} uploaded"
            )
        done.append(VerifiedObject(role=role, path=path, key=key, size=size, sha256=local_sha))
        total += size
    return UploadResult(objects=done, bytes=total)


def delete_objects(store: ObjectStore, keys: Sequence[str]) -> None:
    for key in keys:
        store.delete(key)


def remove_local(root: Path, obj: ObjectInfo) -> bool:
    """Remove the local copy of a verified object, if it is still the file that was
    verified (same size); whether a file was removed."""
    path = local_path(root, obj.path)
    try:
        if path.stat().st_size != obj.size:
            logger.warning("%s changed since its upload; its local copy is kept", obj.path)
            return False
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def remote_hasher(
    catalog: Catalog, store: ObjectStore
) -> Callable[[int, str], tuple[str, int] | None]:
    """What ``callrec verify`` and the web's "verify now" use for a file whose local copy is
    gone: the SHA-256 and size of its object as the store returns it (None: not uploaded)."""
    objects = ObjectQueries(catalog)

    def hash_remote(rec_id: int, path: str) -> tuple[str, int] | None:
        obj = objects.object_for(rec_id, path)
        return None if obj is None else store.sha256(obj.key)

    return hash_remote


def touch(path: Path) -> None:
    """Mark a local copy as just used (its access time; the cache evicts the least recently
    used first). Set explicitly: ``relatime`` and ``noatime`` mounts do not for reads."""
    try:
        stat = path.stat()
        os.utime(path, ns=(max(stat.st_atime_ns, _now_ns()), stat.st_mtime_ns))
    except OSError:
        pass


def _now_ns() -> int:
    import time

    return time.time_ns()
