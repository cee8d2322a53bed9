"""``GET /api/v1/health`` (liveness, no sign-in) and ``GET /api/v1/me`` (who is asking)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from callrec import __version__
from callrec.exceptions import CatalogError
from callrec.web.api import User, bearer
from callrec.web.api.accounts import UserOut, user_out
from callrec.web.auth import ctx_of

public = APIRouter(prefix="/api/v1")
router = APIRouter(prefix="/api/v1", dependencies=[Depends(bearer)])


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    database: bool
    recording: bool
    live_sessions: int


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
