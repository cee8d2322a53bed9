"""Recordings: search, one recording's metadata, its audio (to play, to download in a
format, its waveform), its deletion, and ZIP downloads of several."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import datetime, tzinfo
from pathlib import PurePosixPath
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from callrec.catalog import RecordingInfo
from callrec.catalog.webrecords import COUNT_CAP, MAX_PAGE_SIZE, SORTS
from callrec.exceptions import CatalogError
from callrec.jobs.events import webhook_events
from callrec.retention.files import remove_files
from callrec.spreadsheet import SafeDictWriter
from callrec.web.api import Admin, User, bearer
from callrec.web.auth import Principal, api_csrf, audit, ctx_of
from callrec.web.ids import Id, Page
from callrec.web.media import FORMATS, WavLayoutError, compute_peaks
from callrec.web.recordings import (
    BadRequest,
    audio_format,
    audit_denied,
    content_disposition,
    converted_response,
    decoded_wav_response,
    download_name,
    file_response,
    filters_of,
    quality,
    recording_dict,
    recording_file,
    search_query,
    stored_format,
    time_zone,
    visible_recording,
    zip_name,
    zip_response,
)
from callrec.web.stored import fetch, locate, remote_file_response

router = APIRouter(prefix="/api/v1", dependencies=[Depends(bearer)])


class Counters(BaseModel):
    received: int
    lost: int
    late: int
    duplicate: int
    foreign: int
    malformed: int
    other: int
    ssrc_changes: int
    kernel_dropped: int = Field(
        0, description="Datagrams the kernel dropped on the recording's socket (queue full)."
    )
    clock_changes: int = Field(
        0, description="How often the RTP clock was found to differ from the codec's."
    )
    latch_changes: int = Field(
        0, description="How often the phone's RTP moved to another source port (NAT rebinding)."
    )


class QualityOut(BaseModel):
    expected: int = Field(description="Audio packets that should have arrived.")
    lost: int
    late: int
    duplicate: int
    loss_percent: float
    grade: Literal["good", "fair", "poor", "unknown"]


class RecordingOut(BaseModel):
    id: int
    source: str
    session_id: str
    device: str
    direction: str
    local_number: str
    local_name: str
    remote_number: str
    remote_name: str
    codec: str
    peer_address: str
    start_time: datetime
    end_time: datetime | None
    duration: float | None
    sample_rate: int
    channels: int
    size_bytes: int | None
    sha256: str | None
    path: str
    file_name: str
    status: str
    stop_reason: str | None
    phone_stop_reason: str | None
    extra: dict[str, Any] = Field(
        description="Fields the phone sent that have no column, the SIP mix (`companions`), "
        "and `archive` once the archive policy transcoded the recording: `format` (flac or "
        "opus), `archived_at`, and the WAV's `original_path`, `original_size` and "
        "`original_sha256` (`path`, `size_bytes` and `sha256` are then the archive's)."
    )
    counters: Counters
    quality: QualityOut
    tags: list[str]
    held: bool = Field(False, description="Under legal hold: no one can delete it.")
    node: str | None = Field(
        None,
        description="The node (`node_name`) that recorded it; null on recordings from "
        "before nodes.",
    )


class RecordingRow(RecordingOut):
    snippet: str | None = Field(
        None,
        description="When the search's `q` or `said` matched what was said: that phrase of "
        "the transcript, the matched words in [brackets], with a few words either side.",
    )


class RecordingPage(BaseModel):
    items: list[RecordingRow]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
    prev_cursor: str | None = Field(
        description="Pass as `cursor` for the page before; null on the first page."
    )
    offset: int | None = Field(
        description=f"Matches before this page (its number is offset / limit + 1), when "
        f"counted and at most {COUNT_CAP}."
    )
    total: int | None = Field(description=f"Matches in all pages, counted up to {COUNT_CAP}.")
    total_exact: bool = Field(description=f"False when there are more than {COUNT_CAP}.")


class PeaksOut(BaseModel):
    sample_rate: int
    duration: float
    peaks: list[tuple[float, float]] = Field(description="(min, max) per bucket, -1..1.")


class BulkIn(BaseModel):
    ids: list[Id] = Field(min_length=1, description="Recording ids to put in the ZIP.")


#: Most recordings one bulk delete takes: each is a catalogue write and some unlinks.
MAX_BULK_DELETE: Final = 1000


class BulkDeleteIn(BaseModel):
    ids: list[Id] = Field(
        min_length=1, max_length=MAX_BULK_DELETE, description="Recording ids to delete."
    )


class Refusal(BaseModel):
    id: int
    reason: str


class BulkDeleteOut(BaseModel):
    deleted: list[int] = Field(description="Deleted with their files.")
    missing: list[int] = Field(description="No such recording (or deleted meanwhile).")
    refused: list[Refusal] = Field(description="Kept, and why: still being recorded.")


# -- recordings ----------------------------------------------------------------------------

SortParam = Annotated[
    str,
    Query(description=f"One of {', '.join(sorted(SORTS))}; `-` is descending."),
]


@router.get("/recordings", response_model=RecordingPage, tags=["recordings"])
async def list_recordings(
    request: Request,
    principal: User,
    q: Annotated[
        str, Query(description="Words to find in numbers, names, device, or said in the call.")
    ] = "",
    said: Annotated[
        str, Query(description="A phrase said in the call (its transcript), words in order.")
    ] = "",
    since: Annotated[str, Query(description="Start on/after: date or ISO date-time.")] = "",
    until: Annotated[str, Query(description="Start before; a date includes that day.")] = "",
    tz: Annotated[str, Query(description="IANA time zone of dates (default UTC).")] = "",
    direction: Annotated[Literal["", "in", "out"], Query()] = "",
    device: Annotated[str, Query(description="Device (MAC), exactly.")] = "",
    codec: Annotated[
        str, Query(description="A codec as catalogued: PCMA, PCMU, G722, G726-32, G729, G723...")
    ] = "",
    status: Annotated[Literal["", "recording", "complete", "recovered", "failed"], Query()] = "",
    source: Annotated[Literal["", "server", "usb", "sip"], Query()] = "",
    min_duration: Annotated[str, Query(description="Seconds, inclusive.")] = "",
    max_duration: Annotated[str, Query(description="Seconds, inclusive.")] = "",
    tag: Annotated[str, Query()] = "",
    node: Annotated[str, Query(description="The node that recorded it (node_name).")] = "",
    sort: SortParam = "-start_time",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(description="From `next_cursor`.")] = None,
    page: Annotated[Page | None, Query(description="1-based; instead of cursor.")] = None,
    at: Annotated[
        str,
        Query(
            description="Jump to a date (or ISO date-time) instead of cursor or page: the "
            "page starts at the last call of that day (newest first) or its first (oldest "
            "first); needs a sort by start_time. Cursors go on either way from there."
        ),
    ] = "",
    count: Annotated[
        bool, Query(description="Count the matches (`total`) and those before the page (`offset`).")
    ] = True,
) -> dict[str, Any]:
    """Search recordings the caller may see. Filters combine with AND."""
    ctx = ctx_of(request)
    query = search_query(
        request.query_params, limit=limit, cursor=cursor, page=page, with_total=count
    )
    try:
        result = await ctx.db(ctx.catalog.search, query, principal.scope)
    except CatalogError as exc:
        raise BadRequest(str(exc)) from exc
    tags = await ctx.db(ctx.catalog.tags_of, [r.id for r in result.items])
    held = await ctx.db(ctx.catalog.held_ids, [r.id for r in result.items])
    return {
        "items": [
            {
                **recording_dict(r, tags.get(r.id)),
                "held": r.id in held,
                "snippet": result.snippets.get(r.id),
            }
            for r in result.items
        ],
        "next_cursor": result.next_cursor,
        "prev_cursor": result.prev_cursor,
        "offset": result.offset,
        "total": result.total,
        "total_exact": result.total_exact,
    }


@router.get("/recordings/{rec_id:int}", response_model=RecordingOut, tags=["recordings"])
async def get_recording(request: Request, principal: User, rec_id: Id) -> dict[str, Any]:
    """One recording's metadata, stream counters and quality, and tags."""
    ctx = ctx_of(request)
    rec = await visible_recording(request, principal, rec_id, asked="metadata")
    tags = await ctx.db(ctx.catalog.tags_of, [rec.id])
    held = await ctx.db(ctx.catalog.is_held, rec)
    return {**recording_dict(rec, tags.get(rec.id)), "held": held}


@router.head("/recordings/{rec_id:int}/audio", include_in_schema=False)
@router.get(
    "/recordings/{rec_id:int}/audio",
    tags=["audio"],
    response_class=Response,
    responses={
        200: {"content": {"audio/wav": {}, "audio/flac": {}, "audio/ogg": {}}},
        206: {"description": "The requested byte range."},
        416: {"description": "Range not satisfiable."},
    },
)
async def play(request: Request, principal: User, rec_id: Id) -> Response:
    """The recording's file for a player: inline, with byte ranges so that it can seek. The
    WAV, or for a recording the archive policy transcoded, its FLAC (`audio/flac`) or Ogg
    Opus (`audio/ogg`) file, which browsers play and seek alike. A request from the start of
    the file (200, or a range from byte 0) is audited as a `play`: the pages' player loads
    nothing before the listener presses play or seeks (`preload="none"`), so a page view is
    not a `play`."""
    ctx = ctx_of(request)
    rec = await visible_recording(request, principal, rec_id, asked="play")
    stored = stored_format(rec)
    located = await locate(ctx, rec, recording_file(ctx, rec))
    disposition = content_disposition("inline", download_name(rec, stored))
    if located.remote is not None and ctx.store is not None:
        response = await remote_file_response(
            request,
            ctx.store,
            located.remote,
            media_type=stored.media_type,
            disposition=disposition,
        )
    else:
        response = file_response(
            request, located.path, media_type=stored.media_type, disposition=disposition
        )
    content_range = response.headers.get("content-range", "")
    if (
        request.method == "GET"
        and response.status_code in (200, 206)
        and (response.status_code == 200 or content_range.startswith("bytes 0-"))
    ):
        await audit(request, "play", principal, recording_id=rec.id)
    return response


@router.head("/recordings/{rec_id:int}/download", include_in_schema=False)
@router.get(
    "/recordings/{rec_id:int}/download",
    tags=["audio"],
    response_class=Response,
    responses={200: {"content": {f.media_type: {} for f in FORMATS.values()}}},
)
async def download(
    request: Request,
    principal: User,
    rec_id: Id,
    format: Annotated[
        Literal["wav", "flac", "opus", "mp3"],
        Query(
            description="The format the file is stored in (WAV, or FLAC or Opus once the "
            "archive policy transcoded it) is the file itself (ranges work); others are "
            "encoded on the fly (by PyAV, streamed; their length is the recording's), and "
            "`wav` of an archived recording is decoded back to WAV on the fly."
        ),
    ] = "wav",
) -> Response:
    """The recording as an attachment. Audited as a `download`."""
    ctx = ctx_of(request)
    rec = await visible_recording(request, principal, rec_id, asked="download")
    fmt = audio_format(format)
    path = recording_file(ctx, rec)
    name = download_name(rec, fmt)
    stored = stored_format(rec)
    located = await locate(ctx, rec, path)
    remote = located.remote
    if fmt.name == stored.name:
        if remote is not None and ctx.store is not None:
            response = await remote_file_response(
                request,
                ctx.store,
                remote,
                media_type=fmt.media_type,
                disposition=content_disposition("attachment", name),
            )
        else:
            response = file_response(
                request,
                path,
                media_type=fmt.media_type,
                disposition=content_disposition("attachment", name),
            )
    elif request.method == "HEAD":
        if remote is None and not path.is_file():
            raise HTTPException(404, "the recording's file is missing")
        return Response(
            media_type=fmt.media_type,
            headers={"content-disposition": content_disposition("attachment", name)},
        )
    else:
        # From the store, another format is made from a copy fetched first (an encoder
        # reads its input as a file), removed once it is sent.
        if remote is not None:
            path = await fetch(ctx, remote)
        try:
            if fmt.encoding is None:
                response = await decoded_wav_response(path, name, temporary=remote is not None)
            else:
                response = await converted_response(path, fmt, name, temporary=remote is not None)
        except BaseException:
            if remote is not None:
                path.unlink(missing_ok=True)
            raise
    if request.method == "GET" and response.status_code in (200, 206):
        await audit(request, "download", principal, recording_id=rec.id, format=fmt.name)
    return response


@router.get("/recordings/{rec_id:int}/peaks", response_model=PeaksOut, tags=["audio"])
async def peaks(
    request: Request,
    principal: User,
    rec_id: Id,
    buckets: Annotated[int, Query(ge=10, le=10_000)] = 1000,
) -> dict[str, Any]:
    """The waveform: min and max of the audio in `buckets` equal slices."""
    ctx = ctx_of(request)
    rec = await visible_recording(request, principal, rec_id, asked="peaks")
    path = recording_file(ctx, rec)
    located = await locate(ctx, rec, path)
    if located.remote is not None:
        path = await fetch(ctx, located.remote)
    try:
        if located.remote is None:
            result = await ctx.db(ctx.peaks.get, path, buckets)
        else:
            result = await ctx.db(compute_peaks, path, buckets)
    except FileNotFoundError as exc:
        raise HTTPException(404, "the recording's file is missing") from exc
    except (WavLayoutError, OSError) as exc:
        raise HTTPException(422, f"cannot read the recording's audio: {exc}") from exc
    finally:
        if located.remote is not None:
            path.unlink(missing_ok=True)
    return {"sample_rate": result.sample_rate, "duration": result.duration, "peaks": result.buckets}


@router.delete("/recordings/{rec_id:int}", status_code=204, tags=["recordings"])
async def delete_recording(request: Request, principal: Admin, rec_id: Id) -> Response:
    """Delete the recording, its files, notes and tags (admin); a tombstone stays. Refused
    (409) while it is being recorded or under legal hold. Audited as `delete`."""
    await api_csrf(request, principal)
    await remove_recording(request, principal, rec_id)
    return Response(status_code=204)


async def remove_recording(request: Request, principal: Principal, rec_id: Id) -> None:
    """Delete one recording the principal may see: the catalogue refuses one being recorded
    or under legal hold (409, saying which hold), and leaves a tombstone; then its files go
    (the WAV, companions, an import's original, the sidecar) and the tombstone is marked
    done. A crash in between leaves the tombstone pending: the next retention sweep removes
    the files (docs/retention.md)."""
    ctx = ctx_of(request)
    await visible_recording(request, principal, rec_id, asked="delete")
    try:
        rec, tomb = await ctx.write(
            ctx.catalog.retire_recording,
            rec_id,
            by=principal.user.username,
            reason="deleted in the web UI",
            events=webhook_events(ctx.settings),
        )
    except CatalogError as exc:
        raise HTTPException(409, str(exc)) from exc
    removed: list[str] = []
    if tomb.node in (None, ctx.settings.node_name):
        removed = await run_in_threadpool(remove_files, ctx.root, tomb)
        await ctx.write(ctx.catalog.mark_files_removed, [tomb.id])
    # else another node's disk holds the files: its tombstone stays pending, and that node
    # removes them (docs/scaling.md).
    await audit(
        request,
        "delete",
        principal,
        recording_id=rec.id,
        path=rec.path,
        sha256=rec.sha256,
        start_time=rec.start_time.isoformat(),
        local_number=rec.local_number,
        remote_number=rec.remote_number,
        files_removed=removed,
        tombstone=tomb.id,
    )


@router.post(
    "/recordings/bulk-delete",
    response_model=BulkDeleteOut,
    tags=["recordings"],
)
async def bulk_delete(request: Request, principal: Admin, body: BulkDeleteIn) -> dict[str, Any]:
    """Delete several recordings, their files, notes and tags (admin), each exactly as
    `DELETE /recordings/{id}` does and audits it (`delete`); one more `bulk_delete` entry
    lists what was asked and what became of it. Recordings still being recorded are kept."""
    await api_csrf(request, principal)
    return await remove_recordings(request, principal, body.ids)


async def remove_recordings(
    request: Request, principal: Principal, ids: list[int]
) -> dict[str, Any]:
    deleted: list[int] = []
    missing: list[int] = []
    refused: list[dict[str, Any]] = []
    for rec_id in dict.fromkeys(ids):
        try:
            await remove_recording(request, principal, rec_id)
        except HTTPException as exc:
            if exc.status_code == 404:
                missing.append(rec_id)
            else:
                refused.append({"id": rec_id, "reason": str(exc.detail)})
        else:
            deleted.append(rec_id)
    await audit(
        request,
        "bulk_delete",
        principal,
        count=len(deleted),
        deleted=deleted,
        missing=missing,
        refused=[r["id"] for r in refused],
    )
    return {"deleted": deleted, "missing": missing, "refused": refused}


# -- CSV of a search -----------------------------------------------------------------------

#: Columns of the CSV export, in order.
EXPORT_FIELDS: Final = (
    "id",
    "start_time",
    "end_time",
    "duration",
    "direction",
    "local_number",
    "local_name",
    "remote_number",
    "remote_name",
    "device",
    "codec",
    "status",
    "source",
    "quality",
    "loss_percent",
    "tags",
    "file_name",
    "path",
    "node",
)
#: Rows read from the catalogue at a time while the CSV is sent.
EXPORT_BATCH: Final = 500


@router.get(
    "/recordings.csv",
    tags=["recordings"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def export_csv(request: Request, principal: User) -> StreamingResponse:
    """Every recording matching the same filters as `GET /recordings` (all pages, in its
    `sort`; only those the caller may see) as CSV, sent as it is read. Times are ISO 8601 in
    `tz` (default UTC). A cell a spreadsheet would run as a formula starts with `'`. Audited
    as `export`."""
    ctx = ctx_of(request)
    filters = filters_of(request.query_params)
    zone = time_zone(filters.get("tz"))
    query = search_query(filters, limit=EXPORT_BATCH, with_total=False)
    try:
        first = await ctx.db(ctx.catalog.search, query, principal.scope)
    except CatalogError as exc:
        raise BadRequest(str(exc)) from exc
    name = f"callrec-recordings-{datetime.now().astimezone():%Y-%m-%d_%H%M%S}.csv"
    await audit(request, "export", principal, filters=filters, file_name=name)

    async def lines() -> AsyncIterator[str]:
        text = io.StringIO()
        writer = SafeDictWriter(text, list(EXPORT_FIELDS))
        writer.writeheader()
        page = first
        while True:
            tags = await ctx.db(ctx.catalog.tags_of, [r.id for r in page.items])
            for rec in page.items:
                writer.writerow(_export_row(rec, tags.get(rec.id, []), zone))
            yield text.getvalue()
            text.seek(0)
            text.truncate()
            if page.next_cursor is None:
                return
            following = search_query(
                filters, limit=EXPORT_BATCH, cursor=page.next_cursor, with_total=False
            )
            page = await ctx.db(ctx.catalog.search, following, principal.scope)

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": content_disposition("attachment", name),
            "cache-control": "private, no-store",
        },
    )


def _export_row(rec: RecordingInfo, tags: list[str], zone: tzinfo) -> dict[str, Any]:
    grade = quality(rec)
    return {
        "id": rec.id,
        "start_time": rec.start_time.astimezone(zone).isoformat(),
        "end_time": rec.end_time.astimezone(zone).isoformat() if rec.end_time else "",
        "duration": "" if rec.duration is None else round(rec.duration, 3),
        "direction": rec.direction,
        "local_number": rec.local_number,
        "local_name": rec.local_name,
        "remote_number": rec.remote_number,
        "remote_name": rec.remote_name,
        "device": rec.device,
        "codec": rec.codec,
        "status": rec.status,
        "source": rec.source,
        "quality": grade.grade,
        "loss_percent": grade.loss_percent,
        "tags": " ".join(tags),
        "file_name": PurePosixPath(rec.path).name,
        "path": rec.path,
        "node": rec.node or "",
    }


# -- bulk download -------------------------------------------------------------------------


async def bulk_response(request: Request, principal: Principal, ids: list[int]) -> Response:
    ctx = ctx_of(request)
    if not ids:
        raise BadRequest("select at least one recording")
    limit = ctx.settings.web_zip_max_files
    if len(set(ids)) > limit:
        raise BadRequest(f"at most {limit} recordings per ZIP, {len(set(ids))} asked")
    recs = await ctx.db(ctx.catalog.get_many_visible, ids, principal.scope)
    await audit_denied(request, principal, ids, recs)
    if not recs:
        raise HTTPException(404, "none of these recordings exist or are visible to you")
    name = zip_name()
    await audit(
        request,
        "bulk_download",
        principal,
        recordings=[r.id for r in recs],
        count=len(recs),
        file_name=name,
    )
    return await zip_response(ctx, recs, name)


@router.post(
    "/recordings/bulk-download",
    tags=["audio"],
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
async def bulk_download(request: Request, principal: User, body: BulkIn) -> Response:
    """A ZIP (stored, streamed) of the given recordings' WAV files and an `index.csv`.
    Ids the caller may not see are left out."""
    await api_csrf(request, principal)
    return await bulk_response(request, principal, body.ids)


@router.get(
    "/recordings/bulk-download",
    tags=["audio"],
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
async def bulk_download_search(request: Request, principal: User) -> Response:
    """A ZIP of every recording matching the same filters as `GET /recordings` (at most
    `web_zip_max_files`, newest first)."""
    ctx = ctx_of(request)
    filters = filters_of(request.query_params)
    query = search_query(filters, limit=min(MAX_PAGE_SIZE, ctx.settings.web_zip_max_files))
    ids: list[int] = []
    cursor: str | None = None
    while len(ids) < ctx.settings.web_zip_max_files:
        page = await ctx.db(
            ctx.catalog.search,
            search_query(filters, limit=query.limit, cursor=cursor, with_total=False),
            principal.scope,
        )
        ids.extend(r.id for r in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    return await bulk_response(request, principal, ids[: ctx.settings.web_zip_max_files])
