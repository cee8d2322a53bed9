"""``transcribe``: the job that transcribes one recording (issue 18).

Queued by :class:`~callrec.jobs.completion.Completion` for each finished recording that
``transcribe_policy`` matches, or on demand (``POST /api/v1/recordings/{id}/transcribe``,
through :func:`request`). Keyed by the recording's id, so a recording has one such job: asking
again re-queues that job (:meth:`JobStore.request`), and a run stores its words in place of the
transcript before (:meth:`TranscriptStore.replace`): however often it runs, the recording has
one transcript. The engine runs in a niced worker process (:mod:`callrec.transcribe.pool`).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Final

from callrec.catalog import Catalog, RecordingInfo
from callrec.catalog.jobs import TRANSCRIBE_KIND, JobInfo, JobStore
from callrec.catalog.policy import TranscribePolicy
from callrec.catalog.records import STATUS_RECORDING
from callrec.catalog.transcripts import TranscriptInfo, TranscriptWord
from callrec.catalog.transcriptstore import TranscriptStore
from callrec.config import Settings
from callrec.jobs.runner import JobFailed, JobKind, JobRunner, RetryPolicy
from callrec.transcribe.audio import Transcription
from callrec.transcribe.base import TranscribeError
from callrec.transcribe.pool import TranscriberPool

logger = logging.getLogger(__name__)

KIND: Final = TRANSCRIBE_KIND


def job_key(rec_id: int) -> str:
    return str(rec_id)


def wanted(policy: TranscribePolicy, rec: RecordingInfo, tags: list[str]) -> bool:
    """Whether ``policy`` asks for ``rec`` to be transcribed when it finishes."""
    return policy.matches(
        source=rec.source,
        local=rec.local_number,
        remote=rec.remote_number,
        device=rec.device,
        tags=tags,
    )


def request(store: JobStore, rec_id: int) -> tuple[int, bool]:
    """Queue the transcription of ``rec_id`` now (on demand): the recording's job, added or
    queued again. (job id, False when it was already queued or running)."""
    return store.request(KIND, job_key(rec_id), {"id": rec_id})


def store_transcription(catalog: Catalog, rec_id: int, result: Transcription) -> TranscriptInfo:
    """Store what an engine heard as the recording's transcript (replacing any before)."""
    words = [
        TranscriptWord(
            start=round(t.word.start, 3),
            end=round(t.word.end, 3),
            word=t.word.text,
            confidence=round(t.word.confidence, 4),
            channel=t.channel,
            speaker=t.speaker,
        )
        for t in result.words
    ]
    return TranscriptStore(catalog).replace(
        rec_id,
        words,
        engine=result.engine,
        language=result.language,
        audio_seconds=result.audio_seconds,
        elapsed_seconds=result.elapsed_seconds,
    )


def recording_path(root: Path, rec: RecordingInfo) -> Path:
    return root.joinpath(*rec.path.split("/"))


class TranscribeJobs:
    """The :data:`KIND` handler over a pool of engine processes."""

    def __init__(
        self, runner: JobRunner, catalog: Catalog, settings: Settings, *, root: Path
    ) -> None:
        self.runner = runner
        self.catalog = catalog
        self.root = root
        self.pool = TranscriberPool(
            settings.transcribe_engine,
            model_dir=settings.transcribe_model_dir,
            language=settings.transcribe_language,
            workers=settings.transcribe_workers,
        )
        self.workers = settings.transcribe_workers

    def kind(self) -> JobKind:
        return JobKind(
            name=KIND,
            handler=self.handle,
            concurrency=self.workers,
            retry=RetryPolicy(max_attempts=3, max_age=timedelta(days=2), first=60.0),
            # Renewed while it runs; a long call takes minutes.
            lease=timedelta(minutes=5),
        )

    def close(self) -> None:
        self.pool.close()

    async def handle(self, job: JobInfo) -> str:
        rec_id = int(job.payload.get("id") or job.key)
        rec = await self.runner.read(lambda: self.catalog.get(rec_id))
        if rec is None:
            return f"recording {rec_id} is not in the catalogue (deleted); nothing done"
        if rec.status == STATUS_RECORDING:
            raise JobFailed(f"recording {rec_id} is still being recorded")
        path = recording_path(self.root, rec)
        try:
            result = await self.pool.transcribe(path, rec.extra)
        except TranscribeError as exc:
            raise JobFailed(str(exc)) from None
        stored = await self.runner.write(lambda: store_transcription(self.catalog, rec_id, result))
        return (
            f"recording {rec_id}: {len(stored.words)} words ({result.engine}, "
            f"{result.audio_seconds:.1f} s of audio in {result.elapsed_seconds:.1f} s)"
        )
