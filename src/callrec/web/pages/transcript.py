"""A recording's transcript on its page (issue 18): the words in lines per speaker, each a
button that seeks the player (app.js), the state of its transcription job, and the
"Transcribe" form. The words are in the HTML, so the transcript reads without a script."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from fastapi import Request

from callrec.catalog import TranscriptInfo, TranscriptStore, TranscriptWord
from callrec.catalog.jobs import DEAD, QUEUED, RUNNING, TRANSCRIBE_KIND, JobStore
from callrec.transcribe.captions import PAUSE
from callrec.web.api.transcripts import transcribing
from callrec.web.auth import Principal, audit, ctx_of

#: Most words in one line: a long turn is cut so a line's time stamp stays near its words.
LINE_WORDS: Final = 30


@dataclass(slots=True, kw_only=True)
class Line:
    """Consecutive words of one speaker, without a pause of :data:`PAUSE` seconds."""

    start: float
    speaker: str
    channel: int
    words: list[TranscriptWord] = field(default_factory=list)


def lines(words: Sequence[TranscriptWord]) -> list[Line]:
    """The words in time order, cut into lines where the speaker changes or they pause."""
    out: list[Line] = []
    for word in sorted(words, key=lambda w: (w.start, w.channel)):
        last = out[-1] if out else None
        if (
            last is None
            or word.channel != last.channel
            or word.start - last.words[-1].end >= PAUSE
            or len(last.words) >= LINE_WORDS
        ):
            last = Line(start=word.start, speaker=word.speaker, channel=word.channel)
            out.append(last)
        last.words.append(word)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptView:
    """What the call page shows of a recording's transcript and its transcription."""

    transcript: TranscriptInfo | None
    lines: list[Line]
    #: The job's state as the page says it: "" (no job, or done), queued, running, failed.
    state: str
    #: Why the last attempt failed (admins only), "" otherwise.
    reason: str
    #: Whether this server transcribes at all (the button is useless otherwise).
    available: bool


async def transcript_view(request: Request, principal: Principal, rec_id: int) -> TranscriptView:
    """The transcript of a recording the caller may see (checked before: the page is 404
    for any other), audited as a ``transcript`` read when there is one, as the API's are."""
    ctx = ctx_of(request)
    transcript = await ctx.db(TranscriptStore(ctx.catalog).get, rec_id)
    job = await ctx.db(JobStore(ctx.catalog).find, TRANSCRIBE_KIND, str(rec_id))
    state = ""
    reason = ""
    if job is not None:
        if job.state == DEAD:
            state = "failed"
        elif job.state == RUNNING:
            state = "running"
        elif job.state == QUEUED:
            state = "queued"
        if principal.is_admin and job.state in (DEAD, QUEUED) and job.last_error:
            reason = job.last_error
    if transcript is not None:
        await audit(request, "transcript", principal, recording_id=rec_id, format="page")
    return TranscriptView(
        transcript=transcript,
        lines=lines(transcript.words) if transcript else [],
        state=state,
        reason=reason,
        available=transcribing(ctx.settings.transcribe_workers, jobs=ctx.settings.jobs_enabled),
    )
