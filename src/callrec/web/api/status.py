"""``GET /api/v1/health`` (liveness and the state of each part, no sign-in; also at
``/health``) and ``GET /api/v1/me`` (who is asking)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from callrec import __version__
from callrec.engine import JournalStatus
from callrec.web.api import User, bearer
from callrec.web.api.accounts import UserOut, user_out
from callrec.web.auth import ctx_of
from callrec.web.health import DiskReport

public = APIRouter(prefix="/api/v1")
router = APIRouter(prefix="/api/v1", dependencies=[Depends(bearer)])


class CataloguePart(BaseModel):
    state: Literal["ok", "degraded", "hung", "down"] = Field(
        description="ok; degraded: reads answer, writes fail (read-only, full); down: a read "
        "fails (unreachable, its file removed); hung: a read or write takes too long"
    )
    last_error: str | None = Field(description="Why it is not ok")
    journal_state: Literal["ok", "degraded", "hung"] | None = Field(
        description="The state of the journal's writes to the catalogue"
    )


class DiskPart(BaseModel):
    state: Literal["ok", "degraded", "hung"] = Field(
        description="degraded: under the reserve, not writable, or not there"
    )
    free_bytes: int | None
    reserve_bytes: int | None = Field(description="New recordings are refused below this")
    writable: bool | None
    error: str | None


class JournalPart(BaseModel):
    state: Literal["ok", "degraded"] = Field(
        description="degraded: entries could not be written to the journal file"
    )
    backlog: int = Field(description="Catalogue writes not yet in the catalogue")
    oldest_age: float | None = Field(description="Seconds the oldest of them has waited")
    unwritten: int = Field(description="Entries kept in memory only (the file failed)")
    failures: int = Field(description="Failed attempts to write the catalogue since start")


class WorkersPart(BaseModel):
    state: Literal["ok", "degraded"]
    expected: int = Field(description="Media worker processes configured (--workers N: N - 1)")
    alive: int


class QuotaPart(BaseModel):
    state: Literal["ok", "warning", "over"] = Field(
        description="warning: from 90% of disk_quota; over: past it with nothing left that "
        "may be deleted (held or being recorded). Neither makes the status degraded."
    )
    limit_bytes: int
    used_bytes: int = Field(description="What the catalogued recordings take")
    used_ratio: float


class StoragePart(BaseModel):
    state: Literal["ok", "behind", "unknown"] = Field(
        description="behind: the oldest recording not yet in the object store ended more "
        "than 5 minutes ago (the store unreachable, or uploads slower than calls end); "
        "unknown: the catalogue did not answer. Neither makes the status degraded: "
        "recording goes on, and uploads catch up."
    )
    backlog: int | None = Field(
        description="Finished recordings whose audio is not yet verified in the store"
    )
    oldest_age: float | None = Field(description="Seconds since the oldest of them ended")
    error: str | None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    database: bool = Field(description="The catalogue is ok (see catalogue)")
    recording: bool
    live_sessions: int = Field(description="Calls this node is recording now")
    node: str = Field("", description="This node's node_name (docs/scaling.md)")
    catalogue: CataloguePart
    recordings_disk: DiskPart | None = Field(description="None without a recording engine")
    journal: JournalPart | None = Field(description="None without a recording engine")
    workers: WorkersPart | None = Field(description="None without --workers")
    disk_quota: QuotaPart | None = Field(None, description="None without disk_quota")
    storage: StoragePart | None = Field(None, description="None without storage_url")
    node_clash: str | None = Field(
        None, description="Set when another running server holds this node's node_name"
    )


@public.get(
    "/health",
    response_model=Health,
    tags=["system"],
    responses={503: {"model": Health, "description": "A part is not ok"}},
)
async def health(request: Request, response: Response) -> dict[str, Any]:
    """Liveness and the state of each part, for load balancers and monitoring; no sign-in,
    no recording data. Answers within a second whatever the catalogue does; 503 when a part
    is not ok."""
    ctx = ctx_of(request)
    report = await ctx.health.check()
    if report.status != "ok":
        response.status_code = 503
    return {
        "status": report.status,
        "version": __version__,
        "database": report.catalogue.state == "ok",
        "recording": ctx.recording is not None,
        # This node's calls: the live page shows every node's, its health only its own.
        "live_sessions": len(ctx.recording.live_sessions()) if ctx.recording else 0,
        "node": ctx.settings.node_name,
        "node_clash": report.node_clash,
        "catalogue": {
            "state": report.catalogue.state,
            "last_error": report.catalogue.last_error,
            "journal_state": report.catalogue.journal_state,
        },
        "recordings_disk": _disk(report.disk),
        "journal": _journal(report.journal, report.journal_state),
        "workers": (
            None
            if report.workers is None
            else {
                "state": report.workers_state,
                "expected": report.workers.expected,
                "alive": report.workers.alive,
            }
        ),
        "storage": (
            None
            if report.storage is None
            else {
                "state": report.storage.state,
                "backlog": report.storage.backlog,
                "oldest_age": (
                    None
                    if report.storage.oldest_age is None
                    else round(report.storage.oldest_age, 1)
                ),
                "error": report.storage.error,
            }
        ),
        "disk_quota": (
            None
            if report.quota is None
            else {
                "state": report.quota.state,
                "limit_bytes": report.quota.limit,
                "used_bytes": report.quota.used,
                "used_ratio": round(report.quota.ratio, 4),
            }
        ),
    }


def _disk(report: DiskReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    disk = report.disk
    return {
        "state": report.state,
        "free_bytes": disk.free if disk else None,
        "reserve_bytes": disk.reserve if disk else None,
        "writable": disk.writable if disk else None,
        "error": report.error,
    }


def _journal(status: JournalStatus | None, state: str | None) -> dict[str, Any] | None:
    if status is None:
        return None
    return {
        "state": state,
        "backlog": status.backlog,
        "oldest_age": round(status.oldest_age, 3) if status.oldest_age is not None else None,
        "unwritten": status.unwritten,
        "failures": status.failures,
    }


@router.get("/me", response_model=UserOut, tags=["users"])
async def me(principal: User) -> dict[str, Any]:
    """The user the credentials belong to."""
    return user_out(principal.user)
