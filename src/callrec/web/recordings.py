"""What the API and the pages both do with recordings: find one the caller may see, read
search filters, describe a row and its stream quality, and answer with its audio."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, Final
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from callrec.catalog import RecordingInfo, SearchQuery
from callrec.exceptions import CatalogError
from callrec.media.decode import container_of
from callrec.web.auth import Principal, WebContext, audit
from callrec.web.ids import ID_RANGE, parse_id
from callrec.web.locate import MediaUnreachable
from callrec.web.media import (
    FORMATS,
    AudioFormat,
    TranscodeError,
    WavLayoutError,
    ZipMember,
    as_wav,
    file_slice,
    transcode,
    zip_stream,
)
from callrec.web.ranges import etag_for, last_modified, reply_for
from callrec.web.stored import locate, removed_after, zip_source

#: Search parameters, as the API and the list page name them.
FILTER_PARAMS: Final = (
    "q",
    "said",
    "since",
    "until",
    "direction",
    "device",
    "codec",
    "status",
    "source",
    "min_duration",
    "max_duration",
    "tag",
    "node",
    "sort",
)


class BadRequest(Exception):
    """A parameter that does not make sense; answered with 400 (API) or shown (pages)."""


async def visible_recording(
    request: Request, principal: Principal, rec_id: int, *, asked: str
) -> RecordingInfo:
    """The recording if the caller may see it; 404 otherwise (not 403: a restricted user
    must not learn which ids exist). When it exists outside the caller's restriction, the
    attempt is audited as ``denied`` with what was ``asked`` (``play``, ``download``,
    ``metadata``, ``notes``...)."""
    ctx: WebContext = request.app.state.ctx
    rec = await ctx.db(ctx.catalog.get_visible, rec_id, principal.scope)
    if rec is None:
        if principal.scope is not None and await ctx.db(ctx.catalog.get, rec_id) is not None:
            await audit(request, "denied", principal, recording_id=rec_id, asked=asked)
        raise HTTPException(404, f"no recording {rec_id}")
    return rec


async def audit_denied(
    request: Request, principal: Principal, asked_ids: list[int], shown: list[RecordingInfo]
) -> None:
    """Audits as one ``denied`` entry the recordings among ``asked_ids`` that exist but were
    left out of an answer (a ZIP) because of the caller's restriction."""
    if principal.scope is None:
        return
    ctx: WebContext = request.app.state.ctx
    hidden = set(asked_ids) - {r.id for r in shown}
    if not hidden:
        return
    existing = await ctx.db(ctx.catalog.get_many_visible, hidden, None)
    if existing:
        await audit(
            request, "denied", principal, asked="zip", recordings=sorted(r.id for r in existing)
        )


#: The local path of a recording this node cannot reach: no file is ever there.
NOT_HERE: Final = Path("/dev/null/not-on-this-node")


def recording_file(ctx: WebContext, rec: RecordingInfo) -> Path:
    """The recording's file (:mod:`callrec.web.locate`: every read of audio comes here),
    refusing a catalogued path that would leave the directory; 404 saying why when this node
    cannot reach it."""
    try:
        return ctx.media.locate(rec)
    except MediaUnreachable as exc:
        if ctx.store is not None:
            # Another node's recording: its verified object in the store serves it
            # (callrec.web.stored.locate looks there when this path holds no file).
            return NOT_HERE
        raise HTTPException(404, str(exc)) from exc


# -- search parameters ---------------------------------------------------------------------


def time_zone(name: str | None) -> ZoneInfo:
    if not name:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BadRequest(f"unknown time zone {name!r}") from exc


def parse_moment(value: str, zone: ZoneInfo, *, end: bool = False) -> datetime:
    """An ISO date or date-time. A date means its midnight in ``zone``, and for ``end`` the
    midnight after it (so ``until=2026-03-01`` includes that day); a date-time without an
    offset is in ``zone``."""
    text = value.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = date.fromisoformat(text)
            if end:
                day += timedelta(days=1)
            return datetime.combine(day, time(0), zone).astimezone(UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(f"{value!r} is not a date (YYYY-MM-DD) or ISO date-time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def _number(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError as exc:
        raise BadRequest(f"{name} must be a number of seconds, got {value!r}") from exc
    if not 0 <= number < math.inf:  # also NaN
        raise BadRequest(f"{name} must be a number >= 0")
    return number


def filters_of(params: Mapping[str, str]) -> dict[str, str]:
    """The search filters among ``params`` (with ``tz``), without a page's position: what a
    search of every match (ZIP, CSV) reads."""
    return {k: params[k] for k in (*FILTER_PARAMS, "tz") if params.get(k, "").strip()}


def search_query(
    params: Mapping[str, str],
    *,
    limit: int = 50,
    cursor: str | None = None,
    page: int | None = None,
    with_total: bool = True,
) -> SearchQuery:
    """A :class:`SearchQuery` from request parameters; empty values mean "no filter".

    ``at`` (jump to a date) starts the page at a date or date-time: newest first, at the last
    call of that day (before its end); oldest first, at the first."""
    p = {k: params[k].strip() for k in (*FILTER_PARAMS, "tz", "at") if params.get(k, "").strip()}
    zone = time_zone(p.get("tz"))
    sort = p.get("sort", "-start_time")
    at = parse_moment(p["at"], zone, end=sort.startswith("-")) if "at" in p else None
    try:
        return SearchQuery(
            q=p.get("q", ""),
            said=p.get("said", ""),
            since=parse_moment(p["since"], zone) if "since" in p else None,
            until=parse_moment(p["until"], zone, end=True) if "until" in p else None,
            direction=p.get("direction"),
            device=p.get("device"),
            codec=p.get("codec"),
            status=p.get("status"),
            source=p.get("source"),
            min_duration=_number("min_duration", p["min_duration"])
            if "min_duration" in p
            else None,
            max_duration=_number("max_duration", p["max_duration"])
            if "max_duration" in p
            else None,
            tag=p.get("tag"),
            node=p.get("node"),
            sort=sort,
            limit=limit,
            cursor=cursor or None,
            page=page,
            at=at,
            with_total=with_total,
        )
    except CatalogError as exc:
        raise BadRequest(str(exc)) from exc


# -- describing a recording ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Quality:
    """What the packet counters say about the call's audio."""

    #: Audio packets that should have arrived (received as audio plus lost).
    expected: int
    #: Lost in the network (sequence gaps) or dropped by this machine's kernel, whichever is
    #: more (a dropped packet in mid-call shows as a gap too).
    lost: int
    late: int
    duplicate: int
    loss_percent: float
    #: ``good`` (< 1 % lost or late), ``fair`` (< 5 %), ``poor``, or ``unknown`` (no audio).
    grade: str


def quality(rec: RecordingInfo | Mapping[str, int]) -> Quality:
    if isinstance(rec, RecordingInfo):
        c = {
            name: getattr(rec.counters, name)
            for name in (
                "received",
                "lost",
                "late",
                "duplicate",
                "foreign",
                "malformed",
                "other",
                "kernel_dropped",
            )
        }
    else:
        c = dict(rec)
    audio = c["received"] - c["foreign"] - c["malformed"] - c["other"] - c["duplicate"]
    # Packets the kernel dropped reached the machine and never reached the file. A later
    # packet's sequence number shows them as lost too, but not at the end of a call (nothing
    # comes after): the larger of the two counts is the least that was lost, counted once.
    lost = max(c["lost"], c.get("kernel_dropped", 0))
    expected = max(0, audio) + lost
    impaired = lost + c["late"]
    percent = 100.0 * impaired / expected if expected else 0.0
    if not expected:
        grade = "unknown"
    elif percent < 1:
        grade = "good"
    elif percent < 5:
        grade = "fair"
    else:
        grade = "poor"
    return Quality(
        expected=expected,
        lost=lost,
        late=c["late"],
        duplicate=c["duplicate"],
        loss_percent=round(100.0 * lost / expected, 2) if expected else 0.0,
        grade=grade,
    )


def recording_dict(rec: RecordingInfo, tags: list[str] | None = None) -> dict[str, Any]:
    data = dataclasses.asdict(rec)
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = value.isoformat()
    data["counters"] = dataclasses.asdict(rec.counters)
    data["quality"] = dataclasses.asdict(quality(rec))
    data["tags"] = tags or []
    data["file_name"] = PurePosixPath(rec.path).name
    return data


def download_name(rec: RecordingInfo, fmt: AudioFormat) -> str:
    return f"{PurePosixPath(rec.path).stem}.{fmt.extension}"


def content_disposition(kind: str, filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


# -- audio ---------------------------------------------------------------------------------


def file_response(request: Request, path: Path, *, media_type: str, disposition: str) -> Response:
    """The file with HTTP range support: 206 for one satisfiable range, 416 for an
    unsatisfiable one, 200 otherwise. HEAD gets the same headers without a body."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise HTTPException(404, "the recording's file is missing") from exc
    reply = reply_for(
        request.headers,
        size=stat.st_size,
        etag=etag_for(stat.st_size, stat.st_mtime_ns),
        last_modified=last_modified(stat.st_mtime),
        disposition=disposition,
    )
    if reply.status not in (200, 206):
        return Response(status_code=reply.status, headers=reply.headers)
    if request.method == "HEAD":
        return Response(status_code=reply.status, headers=reply.headers, media_type=media_type)
    return StreamingResponse(
        file_slice(path, reply.start, reply.length),
        status_code=reply.status,
        headers=reply.headers,
        media_type=media_type,
    )


async def converted_response(
    path: Path, fmt: AudioFormat, filename: str, *, temporary: bool = False
) -> Response:
    """``path`` encoded in ``fmt`` as it is sent; a ``temporary`` file (a copy fetched from
    the object store) is removed once sent."""
    if not path.is_file():
        raise HTTPException(404, "the recording's file is missing")
    try:
        body = await run_in_threadpool(transcode, path, fmt)
    except FileNotFoundError as exc:
        raise HTTPException(404, "the recording's file is missing") from exc
    except (WavLayoutError, OSError) as exc:
        raise HTTPException(422, f"cannot read the recording's audio: {exc}") from exc
    except TranscodeError as exc:
        raise HTTPException(503, str(exc)) from exc
    return StreamingResponse(
        removed_after(body, path) if temporary else body,
        media_type=fmt.media_type,
        headers={
            "content-disposition": content_disposition("attachment", filename),
            "cache-control": "private, no-store",
        },
    )


async def decoded_wav_response(path: Path, filename: str, *, temporary: bool = False) -> Response:
    """An archived (FLAC or Opus) recording as the WAV it was: decoded as it is sent, its
    length (and so ``content-length``) exactly the original's; a ``temporary`` file is
    removed once sent."""
    if not path.is_file():
        raise HTTPException(404, "the recording's file is missing")
    try:
        size, body = await run_in_threadpool(as_wav, path)
    except FileNotFoundError as exc:
        raise HTTPException(404, "the recording's file is missing") from exc
    except (WavLayoutError, OSError) as exc:
        raise HTTPException(422, f"cannot read the recording's audio: {exc}") from exc
    return StreamingResponse(
        removed_after(body, path) if temporary else body,
        media_type=FORMATS["wav"].media_type,
        headers={
            "content-disposition": content_disposition("attachment", filename),
            "content-length": str(size),
            "cache-control": "private, no-store",
        },
    )


def stored_format(rec: RecordingInfo) -> AudioFormat:
    """The format the recording's file is in: WAV, or what the archive policy made of it."""
    return FORMATS[container_of(Path(rec.path))]


@dataclass(frozen=True, slots=True)
class Archived:
    """What the archive policy made of a recording (its ``extra["archive"]``)."""

    format: str
    archived_at: datetime | None
    original_sha256: str | None
    original_size: int | None


def archived(rec: RecordingInfo) -> Archived | None:
    entry = rec.extra.get("archive")
    if not isinstance(entry, dict) or not isinstance(entry.get("format"), str):
        return None
    try:
        at = datetime.fromisoformat(entry["archived_at"])
    except (KeyError, TypeError, ValueError):
        at = None
    sha = entry.get("original_sha256")
    size = entry.get("original_size")
    return Archived(
        format=entry["format"],
        archived_at=at,
        original_sha256=sha if isinstance(sha, str) else None,
        original_size=size if isinstance(size, int) else None,
    )


def audio_format(name: str) -> AudioFormat:
    fmt = FORMATS.get(name.lower())
    if fmt is None:
        raise HTTPException(400, f"format must be one of {', '.join(FORMATS)}, not {name!r}")
    return fmt


INDEX_FIELDS: Final = (
    "id",
    "start_time",
    "duration",
    "direction",
    "local_number",
    "local_name",
    "remote_number",
    "remote_name",
    "device",
    "codec",
    "status",
    "sha256",
    "path",
    "node",
)


async def zip_response(ctx: WebContext, recs: list[RecordingInfo], filename: str) -> Response:
    members = []
    for r in recs:
        located = await locate(ctx, r, recording_file(ctx, r))
        source = None
        if located.remote is not None and ctx.store is not None:
            source = zip_source(ctx.store, located.remote)
        members.append(ZipMember(located.path, r.path, r.start_time, source))
    rows = [
        {
            k: (v.isoformat() if isinstance(v, datetime) else v)
            for k, v in ((f, getattr(r, f)) for f in INDEX_FIELDS)
        }
        for r in recs
    ]
    return StreamingResponse(
        zip_stream(members, index_rows=rows),
        media_type="application/zip",
        headers={
            "content-disposition": content_disposition("attachment", filename),
            "cache-control": "private, no-store",
        },
    )


def zip_name() -> str:
    return f"recordings-{datetime.now().astimezone():%Y-%m-%d_%H%M%S}.zip"


def parse_ids(values: list[str]) -> list[int]:
    ids: list[int] = []
    for value in values:
        for part in re.split(r"[,\s]+", value.strip()):
            if not part:
                continue
            number = parse_id(part)
            if number is None:
                raise BadRequest(f"recording ids must be numbers from {ID_RANGE}, got {part!r}")
            ids.append(number)
    return ids


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def dumps(value: Any) -> str:
    return json.dumps(value, default=json_default, ensure_ascii=False)
