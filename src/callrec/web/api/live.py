"""Calls being recorded now: a list, and a Server-Sent Events stream of it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from callrec.engine import LiveSession
from callrec.web.api import User, bearer
from callrec.web.auth import ctx_of
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
    every start and end of a call, and every second."""
    return StreamingResponse(
        ctx_of(request).live.events(principal.scope),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
