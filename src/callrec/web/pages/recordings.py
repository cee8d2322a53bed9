"""The recordings list, a recording's page with its notes, tags and delete forms, the ZIP of
the selected recordings, and the live calls page."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse
from markupsafe import Markup, escape

from callrec.catalog import SearchPage
from callrec.catalog.records import COUNTER_COLUMNS, STATUSES
from callrec.catalog.transcripts import MARK_CLOSE, MARK_OPEN
from callrec.catalog.webrecords import COUNT_CAP, normalise_tag
from callrec.codecs import CODECS as ALL_CODECS
from callrec.exceptions import CatalogError
from callrec.integrity.verify import state as integrity_state
from callrec.web.api.holds import release_hold, set_hold
from callrec.web.api.integrity import verify_now
from callrec.web.api.notes import change_tag, create_note, remove_note
from callrec.web.api.recordings import bulk_response, remove_recording, remove_recordings
from callrec.web.api.transcripts import request_transcription
from callrec.web.auth import Forbidden, Principal, ctx_of
from callrec.web.ids import Id
from callrec.web.pages.inputs import PageUser, field, posted_form, words
from callrec.web.pages.render import redirect, render
from callrec.web.pages.transcript import transcript_view
from callrec.web.recordings import (
    FILTER_PARAMS,
    BadRequest,
    archived,
    parse_ids,
    quality,
    search_query,
    stored_format,
    time_zone,
    visible_recording,
)

router = APIRouter(include_in_schema=False)

PAGE_SIZES: Final = (25, 50, 100, 200)
#: The codec filter's choices: every codec a recording can have.
CODECS: Final = tuple(ALL_CODECS)


# -- recordings ----------------------------------------------------------------------------


@router.get("/")
async def home() -> Response:
    return RedirectResponse("/recordings", status_code=303)


@router.get("/recordings")
async def recordings_page(request: Request, principal: PageUser) -> Response:
    ctx = ctx_of(request)
    params = request.query_params
    try:
        limit = int(params.get("limit") or 50)
    except ValueError:
        limit = 50
    limit = limit if limit in PAGE_SIZES else 50
    error = ""
    items: list[Any] = []
    result = None
    try:
        query = search_query(
            params, limit=limit, cursor=params.get("cursor") or None, page=_page_number(params)
        )
        result = await ctx.db(ctx.catalog.search, query, principal.scope)
        items = result.items
    except (BadRequest, CatalogError) as exc:
        error = str(exc)
    tags = await ctx.db(ctx.catalog.tags_of, [r.id for r in items])
    held = await ctx.db(ctx.catalog.held_ids, [r.id for r in items])
    devices = await _devices(request, principal)
    nodes = await _nodes(request)
    tag_counts = await ctx.db(ctx.catalog.tag_counts, principal.scope)
    filters = {k: params.get(k, "") for k in (*FILTER_PARAMS, "tz")}
    base = {k: v for k, v in filters.items() if v}
    if limit != 50:
        base["limit"] = str(limit)
    zone = _zone(filters["tz"])
    return render(
        request,
        "recordings.html",
        principal=principal,
        items=items,
        tags=tags,
        held=held,
        qualities={r.id: quality(r) for r in items},
        said={i: _marked(text) for i, text in (result.snippets if result else {}).items()},
        result=result,
        error=error,
        filters=filters,
        limit=limit,
        page_sizes=PAGE_SIZES,
        devices=devices,
        nodes=nodes,
        tag_counts=tag_counts,
        codecs=CODECS,
        statuses=sorted(STATUSES),
        pager=_pager(result, base, limit) if result else None,
        presets=date_presets(base, datetime.now(zone).date()),
        at=params.get("at", ""),
        jump_fields={k: v for k, v in base.items() if k not in ("since", "until")},
        time_sorted=(filters["sort"] or "-start_time").lstrip("-") == "start_time",
        csv_url="/api/v1/recordings.csv" + ("?" + urlencode(base) if base else ""),
        zip_max=ctx.settings.web_zip_max_files,
    )


def _marked(snippet: str) -> Markup:
    """A transcript snippet as HTML: escaped, its [matched words] in ``<mark>``."""
    out: list[str] = []
    rest = snippet
    while (start := rest.find(MARK_OPEN)) >= 0 and (end := rest.find(MARK_CLOSE, start)) > 0:
        out.append(str(escape(rest[:start])))
        out.append(f"<mark>{escape(rest[start + 1 : end])}</mark>")
        rest = rest[end + 1 :]
    out.append(str(escape(rest)))
    return Markup("".join(out))


def _page_number(params: Mapping[str, str]) -> int | None:
    value = params.get("page", "").strip()
    if not value:
        return None
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE_LINK:
        raise BadRequest(f"page must be a number from 1 to {MAX_PAGE_LINK}")
    return int(value)


def _zone(name: str) -> ZoneInfo:
    try:
        return time_zone(name)
    except BadRequest:
        return ZoneInfo("UTC")


#: The highest ``page`` the list takes: a page number is an offset, which reads every row
#: before it. Links go as far as the count (``COUNT_CAP`` rows); past it, previous and next
#: (keyset) go on at the same cost on every page.
MAX_PAGE_LINK: Final = COUNT_CAP
#: Page numbers shown on either side of the current one.
PAGE_WINDOW: Final = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Pager:
    """The list's paging: previous and next go by cursor (stable while calls arrive), the
    numbers by page (offset); where this page is comes from the catalogue's count."""

    prev_url: str
    next_url: str
    #: Page numbers to link, None for a gap ("…").
    numbers: list[int | None]
    #: This page's number when it starts on a page boundary; 0 when unknown or between two.
    current: int
    #: "51-100 of 230" (or "of 1,000+"); empty when the position is not known.
    shown: str
    urls: dict[int, str]


def _pager(result: SearchPage, base: dict[str, str], limit: int) -> Pager:
    def url(**extra: str) -> str:
        query = urlencode({**base, **extra})
        return "/recordings" + ("?" + query if query else "")

    pages = 0
    more = False
    if result.total is not None:
        pages = max(1, -(-result.total // limit))
        more = not result.total_exact
    current = 0
    shown = ""
    if result.offset is not None:
        if result.offset % limit == 0:
            current = result.offset // limit + 1
        if result.items and result.total is not None:
            of = f"{result.total:,}{'+' if more else ''}"
            shown = f"{result.offset + 1:,}\u2013{result.offset + len(result.items):,} of {of}"
    numbers: list[int | None] = []
    if pages > 1:
        middle = current or (result.offset // limit + 1 if result.offset is not None else 1)
        wanted = {1, pages, *range(middle - PAGE_WINDOW, middle + PAGE_WINDOW + 1)}
        for n in sorted(n for n in wanted if 1 <= n <= pages):
            if numbers and n - (numbers[-1] or 0) > 1:
                numbers.append(None)
            numbers.append(n)
        if more:
            numbers.append(None)
    return Pager(
        prev_url=url(cursor=result.prev_cursor) if result.prev_cursor else "",
        next_url=url(cursor=result.next_cursor) if result.next_cursor else "",
        numbers=numbers,
        current=current,
        shown=shown,
        urls={n: url(page=str(n)) if n > 1 else url() for n in numbers if n is not None},
    )


def date_presets(base: dict[str, str], today: date) -> list[tuple[str, str, str]]:
    """(key, label, link) of the date presets, for ``today`` in the list's time zone (the
    page's script makes them again in the browser's, which it sends as ``tz``)."""
    week = today - timedelta(days=6)
    month = today.replace(day=1)
    yesterday = today - timedelta(days=1)
    spans = [
        ("today", "Today", today, today),
        ("yesterday", "Yesterday", yesterday, yesterday),
        ("week", "Last 7 days", week, today),
        ("month", "This month", month, today),
    ]
    links = []
    for key, label, since, until in spans:
        query = {**base, "since": since.isoformat(), "until": until.isoformat()}
        links.append((key, label, "/recordings?" + urlencode(query)))
    return links


#: The device filter's choices: a DISTINCT over every recording, so kept for a while.
DEVICES_TTL: Final = 60.0
_device_lists: dict[tuple[str, ...], tuple[float, list[str]]] = {}


async def _devices(request: Request, principal: Principal) -> list[str]:
    ctx = ctx_of(request)
    scope = principal.scope
    key = (
        str(id(ctx)),
        *(scope.extensions if scope else ()),
        "|",
        *(scope.devices if scope else ()),
    )
    now = time.monotonic()
    cached = _device_lists.get(key)
    if cached is not None and now - cached[0] < DEVICES_TTL:
        return cached[1]
    devices = await ctx.db(ctx.catalog.devices_seen, scope)
    if len(_device_lists) > 1000:
        _device_lists.clear()
    _device_lists[key] = (now, devices)
    return devices


_node_lists: dict[str, tuple[float, list[str]]] = {}


async def _nodes(request: Request) -> list[str]:
    """The nodes that recorded (several nodes on one catalogue: the list shows a node column
    and filter once there is more than one), kept like the devices."""
    ctx = ctx_of(request)
    key = str(id(ctx))
    now = time.monotonic()
    cached = _node_lists.get(key)
    if cached is not None and now - cached[0] < DEVICES_TTL:
        return cached[1]
    nodes = await ctx.db(ctx.catalog.nodes_seen)
    if len(_node_lists) > 100:
        _node_lists.clear()
    _node_lists[key] = (now, nodes)
    return nodes


@router.post("/recordings/zip")
async def recordings_zip(request: Request, principal: PageUser) -> Response:
    form = await posted_form(request, principal)
    ids = parse_ids([v for v in form.getlist("id") if isinstance(v, str)])
    return await bulk_response(request, principal, ids)


@router.post("/recordings/delete")
async def recordings_delete(request: Request, principal: PageUser) -> Response:
    """The list's "Delete selected" (admin): the API's bulk delete, then back to the list."""
    if not principal.is_admin:
        raise Forbidden("deleting recordings needs the admin role")
    form = await posted_form(request, principal)
    ids = parse_ids([v for v in form.getlist("id") if isinstance(v, str)])
    if not ids:
        raise BadRequest("select at least one recording")
    outcome = await remove_recordings(request, principal, ids)
    deleted = len(outcome["deleted"])
    message = f"Deleted {deleted} recording{'' if deleted == 1 else 's'}."
    if outcome["refused"]:
        kept = ", ".join(str(r["id"]) for r in outcome["refused"])
        message += f" Kept {kept}: still being recorded."
    back = field(form, "back")
    # Only back to the list, never to another site ("//evil.example").
    if not back.startswith("/recordings") or back.startswith("//"):
        back = "/recordings"
    return redirect(back, message)


@router.get("/recordings/{rec_id:int}")
async def recording_page(request: Request, rec_id: Id, principal: PageUser) -> Response:
    return await _recording(request, principal, rec_id)


async def _recording(
    request: Request,
    principal: Principal,
    rec_id: int,
    *,
    status_code: int = 200,
    **values: Any,
) -> Response:
    """The recording's page; ``values`` carry a form's error and what was typed, shown by
    the form (status 400) instead of a bare error page."""
    ctx = ctx_of(request)
    rec = await visible_recording(request, principal, rec_id, asked="page")
    tags = (await ctx.db(ctx.catalog.tags_of, [rec.id])).get(rec.id, [])
    notes = await ctx.db(ctx.catalog.notes, rec.id)
    holds = await ctx.db(ctx.catalog.holds_on, rec)
    history = (
        await ctx.db(ctx.catalog.audit_entries, recording_id=rec.id, limit=20)
        if principal.is_admin
        else []
    )
    integrity = await ctx.db(integrity_state, ctx.catalog, rec.id)
    said = await transcript_view(request, principal, rec.id)
    shown = {k: v for k, v in rec.extra.items() if v not in ({}, [], "", None)}
    extra = json.dumps(shown, ensure_ascii=False, indent=1) if shown else ""
    # A call still being recorded: the catalogue row holds what the last checkpoint wrote;
    # the engine's live view (the live page's source) has the running figures, and the
    # session's uid lets the page listen to it live.
    live = None
    if rec.status == "recording":
        live = next(
            (
                s
                for s in ctx.live.sessions(principal.scope)
                if s.rec_id == rec.id or (rec.uid and s.uid == rec.uid)
            ),
            None,
        )
    counters = {
        name: (live.counters.get(name, 0) if live else getattr(rec, column))
        for name, column in COUNTER_COLUMNS.items()
    }
    return render(
        request,
        "recording.html",
        principal=principal,
        status_code=status_code,
        rec=rec,
        live=live,
        counters=counters,
        duration=live.duration if live else rec.duration,
        tags=tags,
        notes=notes,
        holds=holds,
        history=history,
        q=quality(counters),
        extra=extra,
        live_uid=live.uid if live else None,
        integrity=integrity,
        stored=stored_format(rec).name,
        archive=archived(rec),
        said=said,
        **values,
    )


@router.post("/recordings/{rec_id:int}/notes")
async def note_add(request: Request, rec_id: Id, principal: PageUser) -> Response:
    form = await posted_form(request, principal)
    text = field(form, "text")
    try:
        await create_note(request, principal, rec_id, text)
    except BadRequest as exc:
        return await _recording(
            request, principal, rec_id, status_code=400, note_error=str(exc), note_text=text
        )
    return redirect(f"/recordings/{rec_id}#notes", "Note added.")


@router.post("/recordings/{rec_id:int}/notes/{note_id:int}/delete")
async def note_delete(request: Request, rec_id: Id, note_id: Id, principal: PageUser) -> Response:
    await posted_form(request, principal)
    await remove_note(request, principal, note_id)
    return redirect(f"/recordings/{rec_id}#notes", "Note deleted.")


@router.post("/recordings/{rec_id:int}/tags")
async def tag_add(request: Request, rec_id: Id, principal: PageUser) -> Response:
    form = await posted_form(request, principal)
    typed = field(form, "tag")
    added = words(typed)
    try:
        if not added:
            raise BadRequest("type a tag")
        for tag in added:  # all or none
            try:
                normalise_tag(tag)
            except CatalogError as exc:
                raise BadRequest(str(exc)) from exc
        for tag in added:
            await change_tag(request, principal, rec_id, tag, add=True)
    except BadRequest as exc:
        return await _recording(
            request, principal, rec_id, status_code=400, tag_error=str(exc), tag_text=typed
        )
    return redirect(f"/recordings/{rec_id}#tags", f"Tagged {', '.join(added)}.")


@router.post("/recordings/{rec_id:int}/tags/remove")
async def tag_remove(request: Request, rec_id: Id, principal: PageUser) -> Response:
    form = await posted_form(request, principal)
    tag = field(form, "tag")
    await change_tag(request, principal, rec_id, tag, add=False)
    return redirect(f"/recordings/{rec_id}#tags", f"Removed tag {tag}.")


@router.post("/recordings/{rec_id:int}/delete")
async def recording_delete(request: Request, rec_id: Id, principal: PageUser) -> Response:
    if not principal.is_admin:
        raise Forbidden("deleting recordings needs the admin role")
    await posted_form(request, principal)
    await remove_recording(request, principal, rec_id)
    return redirect("/recordings", f"Recording {rec_id} deleted.")


@router.post("/recordings/{rec_id:int}/verify")
async def recording_verify(request: Request, rec_id: Id, principal: PageUser) -> Response:
    """ "Verify now": re-hash the file against the hash chain (admins)."""
    if not principal.is_admin:
        raise Forbidden("verifying recordings needs the admin role")
    await posted_form(request, principal)
    finding = await verify_now(request, principal, rec_id)
    if finding is None:
        return redirect(f"/recordings/{rec_id}#integrity", "Verified: the file is intact.")
    return redirect(f"/recordings/{rec_id}#integrity", f"Verification: {finding.line()}")


@router.post("/recordings/{rec_id:int}/transcribe")
async def recording_transcribe(request: Request, rec_id: Id, principal: PageUser) -> Response:
    """ "Transcribe" (admins): the recording's transcription job queued, as the API's."""
    if not principal.is_admin:
        raise Forbidden("transcribing recordings needs the admin role")
    await posted_form(request, principal)
    try:
        _, queued = await request_transcription(request, principal, rec_id)
    except HTTPException as exc:
        if exc.status_code != 409:
            raise
        return redirect(f"/recordings/{rec_id}#transcript", f"Not transcribed: {exc.detail}.")
    message = "Transcription queued." if queued else "The transcription was already queued."
    return redirect(f"/recordings/{rec_id}#transcript", message)


# -- legal holds (issue 16 R) ------------------------------------------------------------


def _admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("legal holds need the admin role")


@router.post("/recordings/{rec_id:int}/hold")
async def recording_hold(request: Request, rec_id: Id, principal: PageUser) -> Response:
    _admin(principal)
    form = await posted_form(request, principal)
    reason = field(form, "reason")
    try:
        hold = await set_hold(request, principal, "recording", reason=reason, ids=[rec_id])
    except BadRequest as exc:
        return await _recording(
            request, principal, rec_id, status_code=400, hold_error=str(exc), hold_text=reason
        )
    return redirect(f"/recordings/{rec_id}#holds", f"Legal hold {hold.id} set.")


@router.post("/recordings/{rec_id:int}/holds/{hold_id:int}/release")
async def recording_hold_release(
    request: Request, rec_id: Id, hold_id: Id, principal: PageUser
) -> Response:
    _admin(principal)
    await posted_form(request, principal)
    await release_hold(request, principal, hold_id)
    return redirect(f"/recordings/{rec_id}#holds", f"Legal hold {hold_id} released.")


@router.post("/recordings/hold")
async def recordings_hold(request: Request, principal: PageUser) -> Response:
    """The list's selection, held (the bulk form's "Hold selected")."""
    _admin(principal)
    form = await posted_form(request, principal)
    ids = parse_ids([v for v in form.getlist("id") if isinstance(v, str)])
    if not ids:
        raise BadRequest("select at least one recording to hold")
    hold = await set_hold(request, principal, "recording", reason=field(form, "reason"), ids=ids)
    return redirect(
        _back(field(form, "back")), f"Legal hold {hold.id} set on {len(ids)} recordings."
    )


@router.post("/recordings/hold-search")
async def recordings_hold_search(request: Request, principal: PageUser) -> Response:
    """Every recording the current search finds, held."""
    _admin(principal)
    form = await posted_form(request, principal)
    search = {k: field(form, k) for k in (*FILTER_PARAMS, "tz") if field(form, k)}
    hold = await set_hold(request, principal, "search", reason=field(form, "reason"), search=search)
    back = "/recordings?" + urlencode(search) if search else "/recordings"
    return redirect(back, f"Legal hold {hold.id} set on {hold.recordings} recordings.")


def _back(url: str) -> str:
    """Only back to the list (never elsewhere: an open redirect)."""
    return url if url.startswith("/recordings") and not url.startswith("//") else "/recordings"


# -- live ----------------------------------------------------------------------------------


@router.get("/live")
async def live_page(request: Request, principal: PageUser) -> Response:
    sessions = ctx_of(request).live.sessions(principal.scope)
    return render(request, "live.html", principal=principal, sessions=sessions)
