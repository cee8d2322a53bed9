"""``recording.completed``: the job each finished recording gets, and what it fans out to.

An engine observer enqueues it (key: the recording's uid) when a recording finishes; the
engine never waits for that. Its handler waits until the journal has catalogued the
recording's final row, then queues the work that follows from it: one webhook delivery per
``webhook_url`` and the ``on_complete_command``, each keyed so that a second run of the
handler adds nothing; and its transcription (:mod:`callrec.jobs.transcription`) when
``transcribe_policy`` matches it. Recordings that finished while no runner could enqueue (a
crash, the catalogue down) get their job from :func:`catch_up`, at start and then every
:data:`CATCH_UP_EVERY`: enqueueing is idempotent by key, so nothing runs twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from callrec.catalog import STATUS_RECORDING, Catalog
from callrec.catalog.jobs import JobInfo, JobStore
from callrec.catalog.policy import TranscribePolicy
from callrec.catalog.records import utcnow
from callrec.config import Settings
from callrec.engine.live import FINISHED, LiveSession, LiveView
from callrec.exceptions import CatalogError
from callrec.jobs import command, transcription, upload, webhooks
from callrec.jobs.runner import JobDeferred, JobKind, JobRunner, RetryPolicy
from callrec.storage.client import ObjectStore

logger = logging.getLogger(__name__)

KIND: Final = "recording.completed"
CATCH_UP_KIND: Final = "jobs.catch_up"
CATCH_UP_EVERY: Final = timedelta(minutes=10)
#: Seconds between looks for a recording the journal has not catalogued yet.
NOT_YET: Final = 5.0
#: A recording still not in the catalogue this long after its end is taken as deleted.
GONE_AFTER: Final = timedelta(days=1)
#: Recordings caught up per look (the next look takes the rest).
CATCH_UP_BATCH: Final = 1000


class Completion:
    """The ``recording.completed`` kind, its observer and its catch-up."""

    def __init__(
        self, runner: JobRunner, catalog: Catalog, settings: Settings, *, root: Path
    ) -> None:
        self.runner = runner
        self.catalog = catalog
        self.settings = settings
        self.root = root
        self.store = JobStore(catalog)
        #: The object store's kinds, when ``storage_url`` is set (see :func:`build_runner`).
        self.storage: upload.Storage | None = None
        self.transcribe_policy = TranscribePolicy.parse(settings.transcribe_policy)
        #: The ``transcribe`` kind's handler, when this runner transcribes (build_runner).
        self.transcription: transcription.TranscribeJobs | None = None

    def close(self) -> None:
        """Stop what runs beside the runner (the transcription workers); after its stop."""
        if self.transcription is not None:
            self.transcription.close()
        if self.storage is not None:
            self.storage.close()

    def kinds(self) -> list[JobKind]:
        return [
            JobKind(
                name=KIND,
                handler=self.handle,
                concurrency=4,
                # A recording whose row the journal cannot write for a week is given up.
                retry=RetryPolicy(max_attempts=20, max_age=timedelta(days=7)),
            ),
            JobKind(name=CATCH_UP_KIND, handler=self.catch_up, concurrency=1),
        ]

    def observe(self, view: LiveView) -> Callable[[], None]:
        """Enqueue the job of each recording that finishes (this process's and its media
        workers'); returns the function that stops it."""

        def finished(event: str, live: LiveSession) -> None:
            if event == FINISHED:
                self.runner.enqueue_soon(KIND, live.uid, {"uid": live.uid})

        return view.add_observer(finished)

    async def handle(self, job: JobInfo) -> str:
        uid = str(job.payload.get("uid") or job.key)
        rec = await self.runner.read(lambda: self.catalog.get_uid(uid))
        if rec is None and utcnow() - job.created_at > GONE_AFTER:
            # Catalogued rows come within seconds while the catalogue answers: this one was
            # deleted before its completion ran (or never made it). Nothing to tell.
            return f"recording {uid} is not in the catalogue; nothing done"
        if rec is None or rec.status == STATUS_RECORDING:
            raise JobDeferred(f"recording {uid} is not catalogued as finished yet", delay=NOT_YET)
        todo: list[tuple[str, str, Mapping[str, Any]]] = []
        if self.settings.webhook_url:
            body = webhooks.event_body(
                webhooks.COMPLETED, rec, settings=self.settings, created=rec.end_time or utcnow()
            )
            todo.extend(webhooks.deliveries(self.settings, body))
        if self.settings.on_complete_command:
            env = command.command_payload(rec, self.root)
            todo.append((command.KIND, uid, {"id": rec.id, "env": env}))
        if self.transcribe_policy.anything and self.settings.transcribe_workers > 0:
            tags = await self.runner.read(lambda: self.catalog.tags_of([rec.id]))
            if transcription.wanted(self.transcribe_policy, rec, tags.get(rec.id, [])):
                todo.append((transcription.KIND, transcription.job_key(rec.id), {"id": rec.id}))
        if self.settings.storage_url:
            todo.append(upload.upload_job(rec.id, rec.uid, rec.sha256, rec.node))
        added = await self.runner.enqueue_many(todo)
        return f"recording {rec.id}: {added} follow-up jobs queued"

    async def start(self, ready: asyncio.Event | None = None) -> None:
        """Catch up once the catalogue is ready (``callrec serve``'s start)."""
        if ready is not None:
            await ready.wait()
        try:
            await self.catch_up()
        except CatalogError as exc:
            logger.error("could not look for recordings without a completion job: %s", exc)

    async def catch_up(self, job: JobInfo | None = None) -> str:
        """Enqueue the job of every recording finished since jobs began (at most
        ``job_catch_up_hours`` ago) that has none."""
        installed = await self.runner.read(self.store.installed_at)
        since = utcnow() - timedelta(hours=self.settings.job_catch_up_hours)
        if installed is not None:
            since = max(since, installed)
        found = await self.runner.read(
            lambda: self.store.finished_without_job(KIND, since, limit=CATCH_UP_BATCH)
        )
        added = await self.runner.enqueue_many((KIND, uid, {"uid": uid}) for _, uid in found)
        if added:
            logger.warning("%d finished recordings had no completion job; queued now", added)
        return f"{added} recordings caught up"


def build_runner(
    settings: Settings,
    catalog: Catalog,
    *,
    root: Path,
    write: Any = None,
    read: Any = None,
    name: str | None = None,
    store: ObjectStore | None = None,
) -> tuple[JobRunner, Completion]:
    """A runner with every kind ``settings`` asks for (``callrec serve``, ``callrec jobs
    run-once``); ``write`` and ``read`` as :class:`JobRunner` takes them."""
    runner = JobRunner(
        JobStore(catalog),
        write=write,
        read=read,
        poll_interval=settings.job_poll_interval,
        keep=timedelta(days=settings.job_keep_days),
        name=name,
        node=settings.node_name,
    )
    completion = Completion(runner, catalog, settings, root=root)
    for kind in completion.kinds():
        runner.register(kind)
    runner.schedule(CATCH_UP_KIND, every=CATCH_UP_EVERY)
    for kind in webhooks.webhook_kinds(settings, catalog=catalog):
        runner.register(kind)
    if settings.on_complete_command:
        runner.register(command.command_kind(settings))
    if settings.transcribe_workers > 0:
        completion.transcription = transcription.TranscribeJobs(
            runner, catalog, settings, root=root
        )
        runner.register(completion.transcription.kind())
    if store is not None:
        completion.storage = upload.Storage(runner, catalog, settings, store, root=root)
        completion.storage.register(runner)
    return runner, completion
