"""The object storage tier's jobs (issue 17 part 1, docs/scaling.md "Object storage").

* ``storage.upload`` (key ``<uid>:<sha256>@<node>``, claimed by that node only: its disk
  holds the files; queued by ``recording.completed`` and by the catch-up): uploads every
  file of a finished recording, verifies each against its SHA-256 (``storage_verify``: the
  store's checksum of what it received, or a read-back), then records them in
  ``recording_objects``. Only then is the local copy a cache (removed at once with
  ``storage_local_keep_days = 0``, else by :class:`LocalCache`). An unreachable store fails
  the attempt: it is retried with back-off (5 s doubling to a minute) for 30 days, while
  recording goes on and /health shows the backlog.
* ``storage.catch_up`` (every ``storage_sweep_interval``): queues the upload of every
  finished recording whose audio is not in the store and has no upload job: those a crash
  or an outage kept from being queued, archive copies (a new file), recordings from before
  ``storage_url`` was set.
* ``storage.sweep`` (every ``storage_sweep_interval``): deletes from the store the objects
  of deleted recordings (and of files a recording no longer has), then forgets their rows.

:class:`LocalCache` is not a job: each node keeps its own disk, so each runs it, every
minute, over its own recordings' copies only: local copies verified more than
``storage_local_keep_days`` ago go, and while the copies take more than
``storage_cache_max_bytes``, the least recently used go (their access time, which the web
sets when it serves one).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

from callrec.catalog import STATUS_RECORDING, Catalog
from callrec.catalog.jobs import JobInfo
from callrec.catalog.objects import (
    SIDECAR,
    UPLOAD_KIND,
    ObjectInfo,
    ObjectQueries,
    VerifiedObject,
    upload_key,
)
from callrec.catalog.records import RecordingInfo, utcnow
from callrec.config import Settings, parse_size
from callrec.exceptions import CatalogError
from callrec.jobs.batching import Batcher
from callrec.jobs.runner import JobDeferred, JobFailed, JobKind, JobRunner, RetryPolicy
from callrec.storage.client import ObjectStore, StorageError
from callrec.storage.files import (
    LocalFileMissing,
    delete_objects,
    local_path,
    remove_local,
    upload_recording,
)
from callrec.storage.location import owner_of

logger = logging.getLogger(__name__)

T = TypeVar("T")

CATCH_UP_KIND: Final = "storage.catch_up"
SWEEP_KIND: Final = "storage.sweep"
#: Uploads at once in this process (each a PUT, and a GET of the same bytes where the store
#: does not check the SHA-256 itself). 8 kept up with 5-9 recordings a second where 16.7
#: finish at 1,000 calls a minute (issue 17); the store's calls wait on the network, not on
#: the CPU, and the boto3 client's pool holds 32 connections.
UPLOAD_CONCURRENCY: Final = 24
#: An unreachable store: retried after 5 s, then 10, 20, 40, 60, 60... for 30 days.
UPLOAD_RETRY: Final = RetryPolicy(
    max_attempts=1_000_000, max_age=timedelta(days=30), first=5.0, cap=60.0
)
#: Seconds before a recording not yet catalogued as finished is looked at again.
NOT_YET: Final = 2.0
#: Seconds between two looks of the local cache.
CACHE_EVERY: Final = 60.0


class Storage:
    """The storage kinds of a runner over one store."""

    def __init__(
        self,
        runner: JobRunner,
        catalog: Catalog,
        settings: Settings,
        store: ObjectStore,
        *,
        root: Path,
    ) -> None:
        self.runner = runner
        self.catalog = catalog
        self.settings = settings
        self.store = store
        self.root = root
        self.objects = ObjectQueries(catalog)
        # Group commit: the reads and writes of the uploads under way at once share one
        # catalogue round trip (a transaction) instead of one each (issue 17).
        self._recordings: Batcher[int, RecordingInfo | None] = Batcher(
            self._read_recordings, spawn=runner.spawn
        )
        self._recorded: Batcher[tuple[int, str, list[VerifiedObject]], list[ObjectInfo] | None] = (
            Batcher(self._record_uploaded, spawn=runner.spawn)
        )
        self._removed: Batcher[list[int], None] = Batcher(self._mark_removed, spawn=runner.spawn)
        # The store's calls block: they run here, never on the runner's catalogue thread.
        self._pool = ThreadPoolExecutor(UPLOAD_CONCURRENCY + 2, thread_name_prefix="storage")

    def kinds(self) -> list[JobKind]:
        return [
            JobKind(
                name=UPLOAD_KIND,
                handler=self.upload,
                concurrency=UPLOAD_CONCURRENCY,
                retry=UPLOAD_RETRY,
                lease=timedelta(minutes=5),
                # The files are on the recording's node's disk: its runners alone take it.
                per_node=True,
            ),
            JobKind(name=CATCH_UP_KIND, handler=self.catch_up),
            JobKind(
                name=SWEEP_KIND,
                handler=self.sweep,
                retry=RetryPolicy(max_attempts=3, max_age=timedelta(hours=1)),
            ),
        ]

    def register(self, runner: JobRunner) -> None:
        for kind in self.kinds():
            runner.register(kind)
        every = timedelta(seconds=self.settings.storage_sweep_interval)
        runner.schedule(CATCH_UP_KIND, every=every)
        runner.schedule(SWEEP_KIND, every=every)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _off(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- batched catalogue calls -------------------------------------------------------------

    async def _read_recordings(self, ids: list[int]) -> list[RecordingInfo | None]:
        found = await self.runner.read(lambda: self.catalog.get_many_visible(ids, None))
        by_id = {rec.id: rec for rec in found}
        return [by_id.get(rec_id) for rec_id in ids]

    async def _record_uploaded(
        self, uploads: list[tuple[int, str, list[VerifiedObject]]]
    ) -> list[list[ObjectInfo] | None]:
        return await self.runner.write(lambda: self.objects.record_uploaded_many(uploads))

    async def _mark_removed(self, batches: list[list[int]]) -> list[None]:
        ids = [i for batch in batches for i in batch]
        await self.runner.write(lambda: self.objects.mark_local_removed(ids))
        return [None] * len(batches)

    # -- the jobs ----------------------------------------------------------------------------

    async def upload(self, job: JobInfo) -> str:
        rec_id = int(job.payload["id"])
        rec = await self._recordings(rec_id)
        if rec is None:
            return f"recording {rec_id} was deleted; nothing to upload"
        if rec.status == STATUS_RECORDING:
            raise JobDeferred(f"recording {rec_id} is not finished yet", delay=NOT_YET)
        if upload_key(owner_of(rec.uid, rec.id), rec.sha256, rec.node) != job.key:
            return f"recording {rec_id} changed (archived?); its new file has its own job"
        try:
            result = await self._off(
                functools.partial(
                    upload_recording,
                    self.store,
                    self.root,
                    rec,
                    verify=self.settings.storage_verify,
                )
            )
        except (StorageError, LocalFileMissing) as exc:
            raise JobFailed(str(exc)) from exc
        keys = [o.key for o in result.objects]
        recorded = await self._recorded((rec.id, rec.path, result.objects))
        if recorded is None:
            # Deleted, or switched to an archive copy, while uploading: these objects belong
            # to nothing (the new file gets its own job).
            try:
                await self._off(delete_objects, self.store, keys)
            except StorageError as exc:
                raise JobFailed(f"recording {rec_id} went meanwhile; {exc}") from exc
            return f"recording {rec_id} went or changed while uploading; its objects deleted"
        removed = ""
        if self.settings.storage_local_keep_days == 0:
            # Verified and recorded (committed) above: only now may the local copies go.
            local = [o for o in recorded if o.role != SIDECAR]
            gone = await self._off(lambda: [o for o in local if remove_local(self.root, o)])
            await self._removed([o.id for o in local])
            removed = f"; {len(gone)} local copies removed"
        return f"{len(keys)} files ({result.bytes} bytes) uploaded and verified{removed}"

    async def catch_up(self, job: JobInfo | None = None) -> str:
        found = await self.runner.read(lambda: self.objects.unuploaded(limit=1000))
        added = await self.runner.enqueue_many(
            upload_job(rec_id, uid, sha, node) for rec_id, uid, sha, node in found
        )
        if added:
            logger.info("%d recordings queued for upload by the catch-up", added)
        return f"{added} uploads queued"

    async def sweep(self, job: JobInfo | None = None) -> str:
        """Delete the objects of deleted recordings (and of replaced files)."""
        total = 0
        while True:
            orphans = await self.runner.read(lambda: self.objects.orphans(limit=500))
            if not orphans:
                return f"{total} objects deleted"
            try:
                await self._off(delete_objects, self.store, [o.key for o in orphans])
            except StorageError as exc:
                raise JobFailed(str(exc)) from exc
            ids = [o.id for o in orphans]
            await self.runner.write(lambda ids=ids: self.objects.forget(ids))  # type: ignore[misc]
            total += len(orphans)


def upload_job(
    rec_id: int, uid: str | None, sha256: str | None, node: str | None = None
) -> tuple[str, str, dict[str, Any]]:
    """The (kind, key, payload) of a recording's upload: claimed by ``node``'s runners only
    (its key ends ``@node``), whichever node queued it."""
    return (UPLOAD_KIND, upload_key(owner_of(uid, rec_id), sha256, node), {"id": rec_id})


# -- the local cache ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheReport:
    removed: int
    freed: int


def evict(
    objects: ObjectQueries,
    root: Path,
    *,
    keep_days: float,
    max_bytes: int | None,
    write: Callable[[Callable[[], None]], None] | None = None,
    node: str | None = None,
) -> CacheReport:
    """One look at this node's local copies of verified files (blocking): those verified
    more than ``keep_days`` ago are removed (``keep_days`` < 0: none for age), then the
    least recently used (access time) while all take more than ``max_bytes``. ``node``:
    only the copies of that node's recordings (and of no node's) count and go: the cache
    is of its own disk."""
    run: Callable[[Callable[[], None]], None] = write or (lambda fn: fn())
    removed, freed = 0, 0
    if keep_days >= 0:
        cutoff = utcnow() - timedelta(days=keep_days)
        while True:
            batch = objects.local_copies(uploaded_before=cutoff, limit=1000, node=node)
            if not batch:
                break
            gone = [o for o in batch if remove_local(root, o)]
            removed += len(gone)
            freed += sum(o.size for o in gone)
            run(lambda b=batch: objects.mark_local_removed(o.id for o in b))  # type: ignore[misc]
            if len(batch) < 1000:
                break
    if max_bytes is not None:
        over = objects.cached_bytes(node=node) - max_bytes
        while over > 0:
            batch = objects.local_copies(limit=2000, node=node)
            if not batch:
                break
            # Least recently used first among the oldest uploads (their atime: see touch()).
            batch.sort(key=lambda o: _atime(local_path(root, o.path)))
            taken = []
            for obj in batch:
                if over <= 0:
                    break
                if remove_local(root, obj):
                    removed += 1
                    freed += obj.size
                over -= obj.size
                taken.append(obj.id)
            run(lambda t=taken: objects.mark_local_removed(t))  # type: ignore[misc]
    return CacheReport(removed=removed, freed=freed)


def _atime(path: Path) -> int:
    try:
        return os.stat(path).st_atime_ns
    except OSError:
        return -1  # gone already: first, so that its row is marked


class LocalCache:
    """Runs :func:`evict` every :data:`CACHE_EVERY` seconds in ``callrec serve``."""

    def __init__(
        self,
        catalog: Catalog,
        settings: Settings,
        *,
        root: Path,
        write: Callable[[Callable[[], Any]], Any],
        every: float = CACHE_EVERY,
    ) -> None:
        self.objects = ObjectQueries(catalog)
        self.root = root
        self.keep_days = settings.storage_local_keep_days
        self.max_bytes = (
            parse_size("storage_cache_max_bytes", settings.storage_cache_max_bytes)
            if settings.storage_cache_max_bytes
            else None
        )
        self.write = write
        self.every = every
        self.node = settings.node_name

    @property
    def needed(self) -> bool:
        return self.keep_days >= 0 or self.max_bytes is not None

    async def once(self) -> CacheReport:
        loop = asyncio.get_running_loop()

        def via(fn: Callable[[], None]) -> None:
            asyncio.run_coroutine_threadsafe(self.write(fn), loop).result()

        return await asyncio.to_thread(
            evict,
            self.objects,
            self.root,
            keep_days=self.keep_days,
            max_bytes=self.max_bytes,
            write=via,
            node=self.node,
        )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                report = await self.once()
                if report.removed:
                    logger.info(
                        "local cache: %d copies removed (%d bytes)", report.removed, report.freed
                    )
            except CatalogError as exc:
                logger.warning("local cache not looked at: %s", exc)
            except Exception:
                logger.exception("local cache look failed")
