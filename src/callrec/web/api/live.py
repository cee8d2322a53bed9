"""Calls being recorded now: a list, and a Server-Sent Events stream of it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from callrec.catalog import Scope
from callrec.engine import LiveSession
from callrec.web.api import User, bearer
from callrec.web.auth import ctx_of, revalidate
from callrec.web.live import live_dict

router = APIRouter(prefix="/api/v1", dependencies=[Depends(bearer)])


@router.get("/live", response_model=list[LiveSession], tags=["live"])
async def live(request: Request, principal: User) -> list[dict[str, Any]]:
    """Calls being recorded now, with their running counters. Listen to one as it is
    recorded over the WebSocket `/api/v1/live/{uid}/listen` (docs/listen.md)."""
    return [live_dict(s) for s in ctx_of(request).live.sessions(principal.scope)]


@router.get(
    "/live/events",
    tags=["live"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def live_events(request: Request, principal: User) -> StreamingResponse:
    """Server-Sent Events: a `snapshot` event (JSON list as in `GET /live`) at once, on
    every start and end of a call, and every second.

    The caller's credentials are checked again before every snapshot: once the token is
    revoked or expired, the session signed out or expired, the user deleted or given a
    one-time password, an `end` event (`{"reason": ...}`) is sent and the stream closes, with
    no snapshot after it. A changed restriction applies from the next snapshot on."""
    ctx = ctx_of(request)

    async def viewer() -> Scope | None:
        now = await revalidate(ctx, principal)
        return None if now is None else now.user.scope

    return StreamingResponse(
        ctx.live.events(viewer),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
