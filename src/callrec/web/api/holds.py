"""Legal holds (admin): list, set on recordings, on a search, on a number or a tag, release.

A held recording cannot be deleted by anyone or anything (the catalogue's delete refuses it:
the web, the API, the CLI, retention and quota sweeps). Every change is audited
(``hold_add``, ``hold_remove``). See docs/retention.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from callrec.catalog import HoldInfo
from callrec.catalog.holds import MAX_HOLD_RECORDINGS
from callrec.catalog.webrecords import MAX_PAGE_SIZE
from callrec.exceptions import CatalogError
from callrec.jobs.events import webhook_events
from callrec.web.api import Admin, bearer
from callrec.web.auth import Principal, api_csrf, audit, ctx_of
from callrec.web.ids import Id
from callrec.web.recordings import FILTER_PARAMS, BadRequest, search_query

router = APIRouter(prefix="/api/v1", dependencies=[Depends(bearer)])


class HoldOut(BaseModel):
    id: int
    kind: Literal["recording", "search", "number", "tag"]
    value: str = Field(description="The number or tag of a rule hold; empty otherwise.")
    query: dict[str, Any] = Field(description="A search hold's filters, as given.")
    reason: str
    created_by: str
    created_at: datetime
    released_at: datetime | None
    released_by: str | None
    recordings: int = Field(description="Recordings a recording or search hold names.")
    active: bool


class HoldIn(BaseModel):
    kind: Literal["recording", "search", "number", "tag"] = Field(
        description="recording: the `ids`; search: every recording matching `search` (the "
        "filters of `GET /recordings`) now; number, tag: every recording with this number "
        "(local or remote) or tag, made later too."
    )
    reason: str = Field(min_length=1, max_length=1000)
    ids: list[Id] = Field(default_factory=list)
    value: str = Field("", description="The number or the tag.")
    search: dict[str, str] = Field(default_factory=dict)


def hold_dict(hold: HoldInfo) -> dict[str, Any]:
    return {
        "id": hold.id,
        "kind": hold.kind,
        "value": hold.value,
        "query": hold.query,
        "reason": hold.reason,
        "created_by": hold.created_by,
        "created_at": hold.created_at,
        "released_at": hold.released_at,
        "released_by": hold.released_by,
        "recordings": hold.recordings,
        "active": hold.active,
    }


@router.get("/holds", response_model=list[HoldOut], tags=["holds"])
async def list_holds(
    request: Request,
    principal: Admin,
    released: Annotated[bool, Query(description="Include released holds.")] = False,
) -> list[dict[str, Any]]:
    """Legal holds, newest first (admin)."""
    ctx = ctx_of(request)
    holds = await ctx.db(ctx.catalog.holds, include_released=released)
    return [hold_dict(h) for h in holds]


@router.post("/holds", response_model=HoldOut, status_code=201, tags=["holds"])
async def add_hold(request: Request, principal: Admin, body: HoldIn) -> dict[str, Any]:
    """Set a legal hold (admin). Audited as `hold_add`."""
    await api_csrf(request, principal)
    hold = await set_hold(
        request,
        principal,
        body.kind,
        reason=body.reason,
        ids=body.ids,
        value=body.value,
        search=body.search,
    )
    return hold_dict(hold)


@router.delete("/holds/{hold_id:int}", status_code=204, tags=["holds"])
async def remove_hold(request: Request, principal: Admin, hold_id: Id) -> Response:
    """Release a legal hold (admin); it stays listed with who released it. Audited as
    `hold_remove`."""
    await api_csrf(request, principal)
    await release_hold(request, principal, hold_id)
    return Response(status_code=204)


async def set_hold(
    request: Request,
    principal: Principal,
    kind: str,
    *,
    reason: str,
    ids: Sequence[int] = (),
    value: str = "",
    search: Mapping[str, str] | None = None,
) -> HoldInfo:
    """A hold set by ``principal``, for the API and the pages: a search is resolved here,
    with the principal's scope, to the recordings it finds now."""
    ctx = ctx_of(request)
    query: dict[str, str] = {}
    rec_ids = list(ids)
    if kind == "search":
        query = {k: v for k, v in (search or {}).items() if k in (*FILTER_PARAMS, "tz") and v}
        rec_ids = await _search_ids(request, principal, query)
        if not rec_ids:
            raise BadRequest("the search finds no recordings to hold")
    elif kind == "recording":
        visible = await ctx.db(ctx.catalog.get_many_visible, rec_ids, principal.scope)
        if len(visible) != len(set(rec_ids)):
            raise HTTPException(404, "some of these recordings do not exist")
    try:
        hold = await ctx.write(
            ctx.catalog.add_hold,
            kind,
            reason=reason,
            by=principal.user.username,
            value=value,
            recording_ids=rec_ids,
            query=query,
            events=webhook_events(ctx.settings),
        )
    except CatalogError as exc:
        raise BadRequest(str(exc)) from exc
    await audit(
        request,
        "hold_add",
        principal,
        hold=hold.id,
        kind=hold.kind,
        value=hold.value,
        query=hold.query,
        reason=hold.reason,
        recordings=rec_ids[:1000],
        count=len(rec_ids),
    )
    return hold


async def release_hold(request: Request, principal: Principal, hold_id: int) -> HoldInfo:
    ctx = ctx_of(request)
    try:
        hold = await ctx.write(ctx.catalog.release_hold, hold_id, by=principal.user.username)
    except CatalogError as exc:
        status = 404 if "no legal hold" in str(exc) else 409
        raise HTTPException(status, str(exc)) from exc
    await audit(
        request,
        "hold_remove",
        principal,
        hold=hold.id,
        kind=hold.kind,
        value=hold.value,
        reason=hold.reason,
    )
    return hold


async def _search_ids(
    request: Request, principal: Principal, params: Mapping[str, str]
) -> list[int]:
    ctx = ctx_of(request)
    ids: list[int] = []
    cursor: str | None = None
    while len(ids) <= MAX_HOLD_RECORDINGS:
        try:
            query = search_query(params, limit=MAX_PAGE_SIZE, cursor=cursor, with_total=False)
            page = await ctx.db(ctx.catalog.search, query, principal.scope)
        except CatalogError as exc:
            raise BadRequest(str(exc)) from exc
        ids.extend(r.id for r in page.items)
        cursor = page.next_cursor
        if cursor is None:
            return ids
    raise BadRequest(f"the search finds more than {MAX_HOLD_RECORDINGS} recordings; narrow it")
