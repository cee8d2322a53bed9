"""The REST API under ``/api/v1``; its OpenAPI description is served at ``/api/openapi.json``
and rendered at ``/api/docs``.

Every route but ``/health`` needs a user: an API token (``Authorization: Bearer crt_...``,
made with ``callrec user token`` or on the account page) or a browser session (then changes
need the ``X-CSRF-Token`` header).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field

from callrec import __version__
from callrec.catalog import (
    AUDIT_ACTIONS,
    ROLES,
    AuditInfo,
    NoteInfo,
    TokenInfo,
    UserInfo,
)
from callrec.catalog.webrecords import COUNT_CAP, MAX_PAGE_SIZE, SORTS
from callrec.engine import LiveSession
from callrec.exceptions import CatalogError
from callrec.web.auth import (
    Principal,
    api_csrf,
    audit,
    ctx_of,
    require_admin,
    require_user,
)
from callrec.web.live import live_dict
from callrec.web.media import FORMATS, WavLayoutError
from callrec.web.recordings import (
    BadRequest,
    audio_format,
    content_disposition,
    converted_response,
    download_name,
    file_response,
    parse_moment,
    recording_dict,
    recording_file,
    search_query,
    time_zone,
    visible_recording,
    zip_name,
    zip_response,
)
from callrec.web.security import (
    PasswordPolicyError,
    hash_password,
    new_api_token,
)

bearer = HTTPBearer(auto_error=False, description="An API token: `Bearer crt_...`")
router = APIRouter(prefix="/api/v1", dependencies=[Depends(bearer)])
public = APIRouter(prefix="/api/v1")

User = Annotated[Principal, Depends(require_user)]
Admin = Annotated[Principal, Depends(require_admin)]


# -- models (for validation and the OpenAPI description) -----------------------------------


class Counters(BaseModel):
    received: int
    lost: int
    late: int
    duplicate: int
    foreign: int
    malformed: int
    other: int
    ssrc_changes: int


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
    extra: dict[str, Any]
    counters: Counters
    quality: QualityOut
    tags: list[str]


class RecordingPage(BaseModel):
    items: list[RecordingOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
    total: int | None = Field(description=f"Matches in all pages, counted up to {COUNT_CAP}.")
    total_exact: bool = Field(description=f"False when there are more than {COUNT_CAP}.")


class PeaksOut(BaseModel):
    sample_rate: int
    duration: float
    peaks: list[tuple[float, float]] = Field(description="(min, max) per bucket, -1..1.")


class NoteIn(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)


class NoteOut(BaseModel):
    id: int
    recording_id: int
    username: str
    text: str
    created_at: datetime


class TagCount(BaseModel):
    tag: str
    count: int


class BulkIn(BaseModel):
    ids: list[int] = Field(min_length=1, description="Recording ids to put in the ZIP.")


class UserOut(BaseModel):
    id: int
    username: str
    role: str
    extensions: list[str]
    devices: list[str]
    must_change_password: bool
    created_at: datetime
    last_login_at: datetime | None


class UserIn(BaseModel):
    username: str
    password: str
    role: Literal["admin", "listener"] = "listener"
    extensions: list[str] = Field(default_factory=list)
    devices: list[str] = Field(default_factory=list)


class UserPatch(BaseModel):
    role: Literal["admin", "listener"] | None = None
    extensions: list[str] | None = None
    devices: list[str] | None = None
    password: str | None = None


class TokenIn(BaseModel):
    name: str = Field(default="", max_length=100)
    expires_in_days: float | None = Field(default=None, gt=0)


class TokenOut(BaseModel):
    id: int
    user_id: int
    username: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="Shown this once; only its SHA-256 is stored.")


class AuditOut(BaseModel):
    id: int
    at: datetime
    user_id: int | None
    username: str
    action: str
    recording_id: int | None
    client_address: str
    detail: dict[str, Any]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    database: bool
    recording: bool
    live_sessions: int


def user_out(user: UserInfo) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "extensions": list(user.extensions),
        "devices": list(user.devices),
        "must_change_password": user.must_change_password,
        "created_at": user.created_at,
        "last_login_at": user.last_login_at,
    }


def token_out(token: TokenInfo) -> dict[str, Any]:
    return {
        "id": token.id,
        "user_id": token.user_id,
        "username": token.username,
        "name": token.name,
        "prefix": token.prefix,
        "created_at": token.created_at,
        "last_used_at": token.last_used_at,
        "expires_at": token.expires_at,
    }


def note_out(note: NoteInfo) -> dict[str, Any]:
    return {
        "id": note.id,
        "recording_id": note.recording_id,
        "username": note.username,
        "text": note.text,
        "created_at": note.created_at,
    }


def audit_out(entry: AuditInfo) -> dict[str, Any]:
    return dataclasses.asdict(entry)  # every field of an audit row is for its readers


# -- health and identity -------------------------------------------------------------------


@public.get("/health", response_model=Health, tags=["system"])
async def health(request: Request, response: Response) -> dict[str, Any]:
    """Liveness for load balancers and monitoring; no sign-in, no recording data."""
    ctx = ctx_of(request)
    try:
        await ctx.db(ctx.catalog.count_users)
        database = True
    except CatalogError:
        database = False
    recording = ctx.recording is not None
    if not database:
        response.status_code = 503
    return {
        "status": "ok" if database else "degraded",
        "version": __version__,
        "database": database,
        "recording": recording,
        "live_sessions": len(ctx.live.sessions(None)),
    }


@router.get("/me", response_model=UserOut, tags=["users"])
async def me(principal: User) -> dict[str, Any]:
    """The user the credentials belong to."""
    return user_out(principal.user)


# -- recordings ----------------------------------------------------------------------------

SortParam = Annotated[
    str,
    Query(description=f"One of {', '.join(sorted(SORTS))}; `-` is descending."),
]


@router.get("/recordings", response_model=RecordingPage, tags=["recordings"])
async def list_recordings(
    request: Request,
    principal: User,
    q: Annotated[str, Query(description="Words to find in numbers, names, device.")] = "",
    since: Annotated[str, Query(description="Start on/after: date or ISO date-time.")] = "",
    until: Annotated[str, Query(description="Start before; a date includes that day.")] = "",
    tz: Annotated[str, Query(description="IANA time zone of dates (default UTC).")] = "",
    direction: Annotated[Literal["", "in", "out"], Query()] = "",
    device: Annotated[str, Query(description="Device (MAC), exactly.")] = "",
    codec: Annotated[str, Query(description="PCMA, PCMU or G722.")] = "",
    status: Annotated[Literal["", "recording", "complete", "recovered", "failed"], Query()] = "",
    source: Annotated[Literal["", "server", "usb", "sip"], Query()] = "",
    min_duration: Annotated[str, Query(description="Seconds, inclusive.")] = "",
    max_duration: Annotated[str, Query(description="Seconds, inclusive.")] = "",
    tag: Annotated[str, Query()] = "",
    sort: SortParam = "-start_time",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(description="From `next_cursor`.")] = None,
    page: Annotated[int | None, Query(ge=1, description="1-based; instead of cursor.")] = None,
    count: Annotated[bool, Query(description="Count the matches (`total`).")] = True,
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
    return {
        "items": [recording_dict(r, tags.get(r.id)) for r in result.items],
        "next_cursor": result.next_cursor,
        "total": result.total,
        "total_exact": result.total_exact,
    }


@router.get("/recordings/{rec_id:int}", response_model=RecordingOut, tags=["recordings"])
async def get_recording(request: Request, principal: User, rec_id: int) -> dict[str, Any]:
    """One recording's metadata, stream counters and quality, and tags."""
    ctx = ctx_of(request)
    rec = await visible_recording(ctx, principal, rec_id)
    tags = await ctx.db(ctx.catalog.tags_of, [rec.id])
    return recording_dict(rec, tags.get(rec.id))


@router.head("/recordings/{rec_id:int}/audio", include_in_schema=False)
@router.get(
    "/recordings/{rec_id:int}/audio",
    tags=["audio"],
    response_class=Response,
    responses={
        200: {"content": {"audio/wav": {}}},
        206: {"description": "The requested byte range."},
        416: {"description": "Range not satisfiable."},
    },
)
async def play(request: Request, principal: User, rec_id: int) -> Response:
    """The WAV for a player: inline, with byte ranges so that it can seek. A request from
    the start of the file is audited as a `play`."""
    ctx = ctx_of(request)
    rec = await visible_recording(ctx, principal, rec_id)
    response = file_response(
        request,
        recording_file(ctx, rec),
        media_type="audio/wav",
        disposition=content_disposition("inline", download_name(rec, FORMATS["wav"])),
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
    rec_id: int,
    format: Annotated[
        Literal["wav", "flac", "opus", "mp3"],
        Query(description="wav: the original file (ranges work); others made by FFmpeg."),
    ] = "wav",
) -> Response:
    """The recording as an attachment. Audited as a `download`."""
    ctx = ctx_of(request)
    rec = await visible_recording(ctx, principal, rec_id)
    fmt = audio_format(format)
    path = recording_file(ctx, rec)
    name = download_name(rec, fmt)
    if fmt.ffmpeg_args is None:
        response = file_response(
            request,
            path,
            media_type=fmt.media_type,
            disposition=content_disposition("attachment", name),
        )
    elif request.method == "HEAD":
        if not path.is_file():
            raise HTTPException(404, "the recording's file is missing")
        return Response(
            media_type=fmt.media_type,
            headers={"content-disposition": content_disposition("attachment", name)},
        )
    else:
        response = await converted_response(path, fmt, name)
    if request.method == "GET" and response.status_code in (200, 206):
        await audit(request, "download", principal, recording_id=rec.id, format=fmt.name)
    return response


@router.get("/recordings/{rec_id:int}/peaks", response_model=PeaksOut, tags=["audio"])
async def peaks(
    request: Request,
    principal: User,
    rec_id: int,
    buckets: Annotated[int, Query(ge=10, le=10_000)] = 1000,
) -> dict[str, Any]:
    """The waveform: min and max of the audio in `buckets` equal slices."""
    ctx = ctx_of(request)
    rec = await visible_recording(ctx, principal, rec_id)
    path = recording_file(ctx, rec)
    try:
        result = await ctx.db(ctx.peaks.get, path, buckets)
    except FileNotFoundError as exc:
        raise HTTPException(404, "the recording's file is missing") from exc
    except (WavLayoutError, OSError) as exc:
        raise HTTPException(422, f"cannot read the recording's audio: {exc}") from exc
    return {"sample_rate": result.sample_rate, "duration": result.duration, "peaks": result.buckets}


@router.delete("/recordings/{rec_id:int}", status_code=204, tags=["recordings"])
async def delete_recording(request: Request, principal: Admin, rec_id: int) -> Response:
    """Delete the recording, its file, notes and tags (admin). Audited as `delete`."""
    await api_csrf(request, principal)
    await remove_recording(request, principal, rec_id)
    return Response(status_code=204)


async def remove_recording(request: Request, principal: Principal, rec_id: int) -> None:
    ctx = ctx_of(request)
    await visible_recording(ctx, principal, rec_id)
    try:
        rec = await ctx.write(ctx.catalog.delete_recording, rec_id)
    except CatalogError as exc:
        raise HTTPException(409, str(exc)) from exc
    path = recording_file(ctx, rec)
    removed = []
    for target in (path, *([ctx.root / rec.original_path] if rec.original_path else [])):
        try:
            target.unlink()
            removed.append(str(target.relative_to(ctx.root)))
        except FileNotFoundError:
            pass
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
    )


# -- bulk download -------------------------------------------------------------------------


async def bulk_response(request: Request, principal: Principal, ids: list[int]) -> Response:
    ctx = ctx_of(request)
    if not ids:
        raise BadRequest("select at least one recording")
    limit = ctx.settings.web_zip_max_files
    if len(set(ids)) > limit:
        raise BadRequest(f"at most {limit} recordings per ZIP, {len(set(ids))} asked")
    recs = await ctx.db(ctx.catalog.get_many_visible, ids, principal.scope)
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
    return zip_response(ctx, recs, name)


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
    query = search_query(
        request.query_params, limit=min(MAX_PAGE_SIZE, ctx.settings.web_zip_max_files)
    )
    ids: list[int] = []
    cursor: str | None = None
    while len(ids) < ctx.settings.web_zip_max_files:
        page = await ctx.db(
            ctx.catalog.search,
            search_query(request.query_params, limit=query.limit, cursor=cursor, with_total=False),
            principal.scope,
        )
        ids.extend(r.id for r in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    return await bulk_response(request, principal, ids[: ctx.settings.web_zip_max_files])


# -- notes and tags ------------------------------------------------------------------------


@router.get("/recordings/{rec_id:int}/notes", response_model=list[NoteOut], tags=["notes"])
async def list_notes(request: Request, principal: User, rec_id: int) -> list[dict[str, Any]]:
    ctx = ctx_of(request)
    await visible_recording(ctx, principal, rec_id)
    return [note_out(n) for n in await ctx.db(ctx.catalog.notes, rec_id)]


@router.post(
    "/recordings/{rec_id:int}/notes", response_model=NoteOut, status_code=201, tags=["notes"]
)
async def add_note(request: Request, principal: User, rec_id: int, body: NoteIn) -> dict[str, Any]:
    """Add a note. Audited as `note_add`."""
    await api_csrf(request, principal)
    return note_out(await create_note(request, principal, rec_id, body.text))


async def create_note(request: Request, principal: Principal, rec_id: int, text: str) -> NoteInfo:
    ctx = ctx_of(request)
    await visible_recording(ctx, principal, rec_id)
    try:
        note = await ctx.write(ctx.catalog.add_note, rec_id, user=principal.user, text=text)
    except CatalogError as exc:
        raise BadRequest(str(exc)) from exc
    await audit(request, "note_add", principal, recording_id=rec_id, note_id=note.id, text=text)
    return note


@router.delete("/notes/{note_id:int}", status_code=204, tags=["notes"])
async def delete_note(request: Request, principal: User, note_id: int) -> Response:
    """Delete a note: its author or an admin. Audited as `note_delete`."""
    await api_csrf(request, principal)
    await remove_note(request, principal, note_id)
    return Response(status_code=204)


async def remove_note(request: Request, principal: Principal, note_id: int) -> int:
    ctx = ctx_of(request)
    note = await ctx.db(ctx.catalog.get_note, note_id)
    if note is None:
        raise HTTPException(404, f"no note {note_id}")
    await visible_recording(ctx, principal, note.recording_id)
    if not principal.is_admin and note.user_id != principal.user.id:
        raise HTTPException(403, "only its author or an admin may delete a note")
    await ctx.write(ctx.catalog.delete_note, note_id)
    await audit(
        request,
        "note_delete",
        principal,
        recording_id=note.recording_id,
        note_id=note_id,
        text=note.text,
    )
    return note.recording_id


@router.put("/recordings/{rec_id:int}/tags/{tag}", status_code=204, tags=["tags"])
async def put_tag(request: Request, principal: User, rec_id: int, tag: str) -> Response:
    """Tag a recording (idempotent). Audited as `tag_add`."""
    await api_csrf(request, principal)
    await change_tag(request, principal, rec_id, tag, add=True)
    return Response(status_code=204)


@router.delete("/recordings/{rec_id:int}/tags/{tag}", status_code=204, tags=["tags"])
async def delete_tag(request: Request, principal: User, rec_id: int, tag: str) -> Response:
    """Remove a tag. Audited as `tag_remove`."""
    await api_csrf(request, principal)
    await change_tag(request, principal, rec_id, tag, add=False)
    return Response(status_code=204)


async def change_tag(
    request: Request, principal: Principal, rec_id: int, tag: str, *, add: bool
) -> None:
    ctx = ctx_of(request)
    await visible_recording(ctx, principal, rec_id)
    try:
        if add:
            changed = await ctx.write(ctx.catalog.add_tag, rec_id, tag)
        else:
            changed = await ctx.write(ctx.catalog.remove_tag, rec_id, tag)
    except CatalogError as exc:
        raise BadRequest(str(exc)) from exc
    if changed:
        action = "tag_add" if add else "tag_remove"
        await audit(request, action, principal, recording_id=rec_id, tag=tag.strip().lower())


@router.get("/tags", response_model=list[TagCount], tags=["tags"])
async def list_tags(request: Request, principal: User) -> list[dict[str, Any]]:
    """Every tag on a recording the caller may see, most used first."""
    ctx = ctx_of(request)
    counts = await ctx.db(ctx.catalog.tag_counts, principal.scope)
    return [{"tag": t, "count": n} for t, n in counts]


# -- live ----------------------------------------------------------------------------------


@router.get("/live", response_model=list[LiveSession], tags=["live"])
async def live(request: Request, principal: User) -> list[dict[str, Any]]:
    """Calls being recorded now, with their running counters."""
    return [live_dict(s) for s in ctx_of(request).live.sessions(principal.scope)]


@router.get(
    "/live/events",
    tags=["live"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def live_events(request: Request, principal: User) -> StreamingResponse:
    """Server-Sent Events: a `snapshot` event (JSON list as in `GET /live`) at once, on
    every start and end of a call, and every second."""
    return StreamingResponse(
        ctx_of(request).live.events(principal.scope),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


# -- users and tokens ----------------------------------------------------------------------


@router.get("/users", response_model=list[UserOut], tags=["users"])
async def list_users(request: Request, principal: Admin) -> list[dict[str, Any]]:
    ctx = ctx_of(request)
    return [user_out(u) for u in await ctx.db(ctx.catalog.list_users)]


@router.post("/users", response_model=UserOut, status_code=201, tags=["users"])
async def create_user(request: Request, principal: Admin, body: UserIn) -> dict[str, Any]:
    """Add a user (admin). Audited as `user_add`."""
    await api_csrf(request, principal)
    ctx = ctx_of(request)
    try:
        password_hash = await ctx.db(hash_password, body.password)
        user = await ctx.write(
            ctx.catalog.create_user,
            body.username,
            password_hash=password_hash,
            role=body.role,
            extensions=body.extensions,
            devices=body.devices,
        )
    except (CatalogError, PasswordPolicyError) as exc:
        raise BadRequest(str(exc)) from exc
    await audit(request, "user_add", principal, target=user.username, role=user.role)
    return user_out(user)


@router.patch("/users/{user_id:int}", response_model=UserOut, tags=["users"])
async def update_user(
    request: Request, principal: Admin, user_id: int, body: UserPatch
) -> dict[str, Any]:
    """Change a user's role, restrictions or password (admin). Audited."""
    await api_csrf(request, principal)
    ctx = ctx_of(request)
    try:
        password_hash = None
        if body.password is not None:
            password_hash = await ctx.db(hash_password, body.password)
        user = await ctx.write(
            ctx.catalog.update_user,
            user_id,
            role=body.role,
            extensions=body.extensions,
            devices=body.devices,
            password_hash=password_hash,
        )
    except (CatalogError, PasswordPolicyError) as exc:
        raise BadRequest(str(exc)) from exc
    changed = body.model_dump(exclude_none=True, exclude={"password"})
    await audit(
        request,
        "user_update",
        principal,
        target=user.username,
        password_changed=body.password is not None,
        **changed,
    )
    return user_out(user)


@router.delete("/users/{user_id:int}", status_code=204, tags=["users"])
async def delete_user(request: Request, principal: Admin, user_id: int) -> Response:
    """Remove a user and their tokens (admin); the audit log keeps their name."""
    await api_csrf(request, principal)
    ctx = ctx_of(request)
    try:
        user = await ctx.write(ctx.catalog.delete_user, user_id)
    except CatalogError as exc:
        raise BadRequest(str(exc)) from exc
    await audit(request, "user_delete", principal, target=user.username)
    return Response(status_code=204)


@router.get("/tokens", response_model=list[TokenOut], tags=["users"])
async def list_tokens(request: Request, principal: User) -> list[dict[str, Any]]:
    """The caller's API tokens (an admin sees everyone's)."""
    ctx = ctx_of(request)
    owner = None if principal.is_admin else principal.user.id
    return [token_out(t) for t in await ctx.db(ctx.catalog.list_tokens, owner)]


@router.post("/tokens", response_model=TokenCreated, status_code=201, tags=["users"])
async def create_token(request: Request, principal: User, body: TokenIn) -> dict[str, Any]:
    """A new API token for the caller; the response is the only time it is shown."""
    await api_csrf(request, principal)
    info, token = await issue_token(request, principal, body.name, body.expires_in_days)
    return {**token_out(info), "token": token}


async def issue_token(
    request: Request, principal: Principal, name: str, days: float | None
) -> tuple[TokenInfo, str]:
    ctx = ctx_of(request)
    token, token_hash, prefix = new_api_token()
    expires = datetime.now(UTC) + timedelta(days=days) if days else None
    info = await ctx.write(
        ctx.catalog.create_token,
        principal.user.id,
        name=name,
        token_hash=token_hash,
        prefix=prefix,
        expires_at=expires,
    )
    await audit(request, "token_create", principal, token_id=info.id, name=info.name)
    return info, token


@router.delete("/tokens/{token_id:int}", status_code=204, tags=["users"])
async def revoke_token(request: Request, principal: User, token_id: int) -> Response:
    """Revoke one of the caller's tokens (an admin: anyone's)."""
    await api_csrf(request, principal)
    await drop_token(request, principal, token_id)
    return Response(status_code=204)


async def drop_token(request: Request, principal: Principal, token_id: int) -> None:
    ctx = ctx_of(request)
    owner = None if principal.is_admin else principal.user.id
    if not await ctx.write(ctx.catalog.delete_token, token_id, user_id=owner):
        raise HTTPException(404, f"no token {token_id}")
    await audit(request, "token_revoke", principal, token_id=token_id)


# -- audit log -----------------------------------------------------------------------------


async def audit_rows(
    request: Request,
    *,
    limit: int,
    before_id: int | None,
) -> list[AuditInfo]:
    ctx = ctx_of(request)
    params = request.query_params
    zone = time_zone(params.get("tz"))
    action = params.get("action") or None
    if action is not None and action not in AUDIT_ACTIONS:
        raise BadRequest(f"action must be one of {', '.join(sorted(AUDIT_ACTIONS))}")
    rec = params.get("recording_id") or None
    if rec is not None and not rec.isdigit():
        raise BadRequest("recording_id must be a number")
    return await ctx.db(
        ctx.catalog.audit_entries,
        since=parse_moment(params["since"], zone) if params.get("since") else None,
        until=parse_moment(params["until"], zone, end=True) if params.get("until") else None,
        username=params.get("username") or None,
        action=action,
        recording_id=int(rec) if rec else None,
        before_id=before_id,
        limit=limit,
    )


AuditFilters = {
    "since": "Date or ISO date-time.",
    "until": "Date (inclusive) or ISO date-time.",
    "username": "Exactly this user.",
    "action": f"One of {', '.join(sorted(AUDIT_ACTIONS))}.",
    "recording_id": "Entries about this recording.",
}


@router.get("/audit", response_model=list[AuditOut], tags=["audit"])
async def audit_log(
    request: Request,
    principal: Admin,
    since: Annotated[str, Query(description=AuditFilters["since"])] = "",
    until: Annotated[str, Query(description=AuditFilters["until"])] = "",
    tz: Annotated[str, Query()] = "",
    username: Annotated[str, Query(description=AuditFilters["username"])] = "",
    action: Annotated[str, Query(description=AuditFilters["action"])] = "",
    recording_id: Annotated[str, Query(description=AuditFilters["recording_id"])] = "",
    before_id: Annotated[int | None, Query(description="Page back: last id seen.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """The audit log, newest first (admin)."""
    return [audit_out(e) for e in await audit_rows(request, limit=limit, before_id=before_id)]


@router.get(
    "/audit.csv",
    tags=["audit"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def audit_export(request: Request, principal: Admin) -> StreamingResponse:
    """The audit log as CSV, with the same filters as `GET /audit` (admin). The export is
    itself audited."""
    await audit(request, "audit_export", principal, filters=dict(request.query_params))
    return await audit_csv(request)


async def audit_csv(request: Request) -> StreamingResponse:
    first = await audit_rows(request, limit=5000, before_id=None)

    async def rows() -> Any:
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(
            ["id", "at", "username", "action", "recording_id", "client_address", "detail"]
        )
        batch = first
        while batch:
            for e in batch:
                writer.writerow(
                    [
                        e.id,
                        e.at.isoformat(),
                        e.username,
                        e.action,
                        "" if e.recording_id is None else e.recording_id,
                        e.client_address,
                        _json(e.detail),
                    ]
                )
            yield text.getvalue()
            text.seek(0)
            text.truncate()
            batch = await audit_rows(request, limit=5000, before_id=batch[-1].id)

    name = f"callrec-audit-{datetime.now().astimezone():%Y-%m-%d_%H%M%S}.csv"
    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": content_disposition("attachment", name)},
    )


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, sort_keys=True)


__all__ = ["ROLES", "public", "router"]
