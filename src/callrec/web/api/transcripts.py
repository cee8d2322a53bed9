"""A recording's transcript (issue 18): its words with times and speakers, as JSON, WebVTT
or SRT, and asking for one. Each read is audited as a ``transcript`` (what was said is as
private as the audio); a user restricted to some extensions gets 404 for any other call's
transcript, as for the call itself."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field

from callrec.catalog import TranscriptInfo, TranscriptStore
from callrec.catalog.jobs import TRANSCRIBE_KIND, JobStore
from callrec.transcribe import captions
from callrec.web.api import Admin, User, bearer
from callrec.web.auth import Principal, api_csrf, audit, ctx_of
from callrec.web.ids import Id
from callrec.web.recordings import visible_recording

router = APIRouter(prefix="/api/v1", dependencies=[Depends(bearer)])

#: Subtitle formats by suffix: media type and writer.
SUBTITLES = {
    "vtt": ("text/vtt; charset=utf-8", captions.webvtt),
    "srt": ("application/x-subrip; charset=utf-8", captions.srt),
}


class WordOut(BaseModel):
    start: float = Field(description="Seconds from the recording's start.")
    end: float
    word: str
    confidence: float = Field(description="0-1, as the engine judged it.")
    channel: int = Field(description="0: left (or mono), 1: right.")
    speaker: str = Field(
        description="`caller` or `callee` on a stereo SIP recording (left, right); empty on "
        "a mono one."
    )


class TranscriptOut(BaseModel):
    recording_id: int
    engine: str
    language: str
    created_at: datetime
    audio_seconds: float
    elapsed_seconds: float = Field(description="Seconds the engine took.")
    text: str = Field(description="The words in time order, as the search sees them.")
    speakers: list[str] = Field(description="The speakers of the words, in channel order.")
    words: list[WordOut]


class TranscribeOut(BaseModel):
    job_id: int
    queued: bool = Field(
        description="False when the recording's transcription was already queued or running."
    )


def transcript_dict(t: TranscriptInfo) -> dict[str, Any]:
    speakers = sorted({(w.channel, w.speaker) for w in t.words})
    return {
        "recording_id": t.recording_id,
        "engine": t.engine,
        "language": t.language,
        "created_at": t.created_at,
        "audio_seconds": t.audio_seconds,
        "elapsed_seconds": t.elapsed_seconds,
        "text": t.text,
        "speakers": [s for _, s in speakers if s],
        "words": [
            {
                "start": w.start,
                "end": w.end,
                "word": w.word,
                "confidence": w.confidence,
                "channel": w.channel,
                "speaker": w.speaker,
            }
            for w in t.words
        ],
    }


async def read_transcript(
    request: Request, principal: Principal, rec_id: int, *, form: str
) -> TranscriptInfo:
    """The transcript of a recording the caller may see (404 otherwise, and when it has
    none), audited as a ``transcript`` read."""
    ctx = ctx_of(request)
    rec = await visible_recording(request, principal, rec_id, asked="transcript")
    transcript = await ctx.db(TranscriptStore(ctx.catalog).get, rec.id)
    if transcript is None:
        raise HTTPException(404, f"recording {rec_id} has no transcript")
    await audit(request, "transcript", principal, recording_id=rec.id, format=form)
    return transcript


@router.get(
    "/recordings/{rec_id:int}/transcript", response_model=TranscriptOut, tags=["transcripts"]
)
async def get_transcript(request: Request, principal: User, rec_id: Id) -> dict[str, Any]:
    """The words said in the recording, in time order, each with its start and end (seconds
    from the recording's start), confidence and speaker. 404 when it has no transcript (yet).
    Audited as `transcript`."""
    return transcript_dict(await read_transcript(request, principal, rec_id, form="json"))


@router.get(
    "/recordings/{rec_id:int}/transcript.{suffix}",
    tags=["transcripts"],
    response_class=Response,
    responses={200: {"content": {"text/vtt": {}, "application/x-subrip": {}}}},
)
async def get_subtitles(
    request: Request, principal: User, rec_id: Id, suffix: Literal["vtt", "srt"]
) -> Response:
    """The transcript as subtitles: WebVTT (`.vtt`, a `<track>` for the player; speakers as
    voice spans) or SubRip (`.srt`). Audited as `transcript`."""
    media_type, write = SUBTITLES[suffix]
    transcript = await read_transcript(request, principal, rec_id, form=suffix)
    return Response(write(transcript.words), media_type=media_type)


@router.post(
    "/recordings/{rec_id:int}/transcribe",
    response_model=TranscribeOut,
    status_code=202,
    tags=["transcripts"],
)
async def transcribe(request: Request, principal: Admin, rec_id: Id) -> dict[str, Any]:
    """Transcribe the recording now (admin): its transcription job is queued (again: the new
    transcript replaces the one before). 409 when this server does not transcribe
    (`transcribe_workers = 0`). Audited as `transcribe`."""
    await api_csrf(request, principal)
    job_id, queued = await request_transcription(request, principal, rec_id)
    return {"job_id": job_id, "queued": queued}


async def request_transcription(
    request: Request, principal: Principal, rec_id: int
) -> tuple[int, bool]:
    """Queue the recording's transcription (the API's and the call page's "Transcribe"):
    (job id, False when it was already queued or running); 409 when this server does not
    transcribe. The caller checks the admin role and the CSRF token."""
    ctx = ctx_of(request)
    rec = await visible_recording(request, principal, rec_id, asked="transcribe")
    if not transcribing(ctx.settings.transcribe_workers, jobs=ctx.settings.jobs_enabled):
        raise HTTPException(409, NOT_TRANSCRIBING)
    store = JobStore(ctx.catalog)
    job_id, queued = await ctx.write(store.request, TRANSCRIBE_KIND, str(rec.id), {"id": rec.id})
    await audit(request, "transcribe", principal, recording_id=rec.id)
    return job_id, queued


NOT_TRANSCRIBING = "this server does not transcribe (transcribe_workers = 0 or jobs off)"


def transcribing(workers: int, *, jobs: bool) -> bool:
    """Whether this server runs transcription jobs."""
    return workers > 0 and jobs
