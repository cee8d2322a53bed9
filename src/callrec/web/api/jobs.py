"""``/api/v1/jobs`` (admin): the job runner's queue, each job's history of attempts (a
webhook's answers, a command's exit status and output), and retrying one (issue 16 part 3)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel

from callrec.catalog import JobInfo, JobStore
from callrec.catalog.jobs import AttemptInfo
from callrec.jobs.events import job_event_type
from callrec.web.api import Admin
from callrec.web.auth import api_csrf, audit, ctx_of
from callrec.web.ids import Id

router = APIRouter(prefix="/api/v1")

State = Literal["queued", "running", "done", "dead"]


class AttemptOut(BaseModel):
    attempt: int
    runner: str
    started_at: datetime
    finished_at: datetime
    outcome: str
    detail: str


class JobOut(BaseModel):
    id: int
    kind: str
    key: str
    state: str
    attempts: int
    run_after: datetime
    claimed_by: str | None
    lease_until: datetime | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    #: For webhook deliveries: where to.
    url: str | None = None
    #: For webhook deliveries: the event's type.
    event: str | None = None


class JobDetailOut(JobOut):
    payload: dict[str, Any]
    history: list[AttemptOut]


def job_out(job: JobInfo) -> dict[str, Any]:
    out = dataclasses.asdict(job)
    del out["payload"]
    url = job.payload.get("url")
    out["url"] = url if isinstance(url, str) else None
    out["event"] = job_event_type(job.payload)
    return out


def attempt_out(attempt: AttemptInfo) -> dict[str, Any]:
    out = dataclasses.asdict(attempt)
    del out["job_id"]
    return out


@router.get("/jobs", response_model=list[JobOut], tags=["jobs"])
async def list_jobs(
    request: Request,
    principal: Admin,
    state: Annotated[State | None, Query(description="Only jobs in this state.")] = None,
    kind: Annotated[
        str | None,
        Query(
            max_length=100,
            description="Only jobs of this kind (`webhook:*`: every webhook URL's).",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    before_id: Annotated[
        Id | None,
        Query(
            description="Only jobs older than this one: the next page, stable while jobs are added."
        ),
    ] = None,
) -> list[dict[str, Any]]:
    """Jobs newest first (admin): recording completions, webhook deliveries,
    `on_complete_command` runs, periodic work. A `dead` job was given up after its
    retries; `POST /api/v1/jobs/{id}/retry` queues it again."""
    ctx = ctx_of(request)
    store = JobStore(ctx.catalog)
    jobs = await ctx.db(
        store.list_jobs, state=state, kind=kind, limit=limit, offset=offset, before_id=before_id
    )
    return [job_out(job) for job in jobs]


@router.get("/jobs/{job_id:int}", response_model=JobDetailOut, tags=["jobs"])
async def get_job(request: Request, principal: Admin, job_id: Id) -> dict[str, Any]:
    """One job with its payload and every attempt: when, by which runner, the outcome
    (`done`, `retry`, `dead`, `deferred`) and what came back (a webhook endpoint's status
    and the first bytes of its answer, a command's exit status and the end of its output)."""
    ctx = ctx_of(request)
    store = JobStore(ctx.catalog)
    job = await ctx.db(store.get, job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    out = job_out(job)
    out["payload"] = job.payload
    out["history"] = [attempt_out(a) for a in await ctx.db(store.attempts, job_id)]
    return out


@router.post("/jobs/{job_id:int}/retry", response_model=JobOut, tags=["jobs"])
async def retry_job(request: Request, principal: Admin, job_id: Id) -> dict[str, Any]:
    """Queue a job to run now with a fresh count of attempts (a dead webhook delivery once
    its endpoint works again). 409 while it runs. Audited as `job_retry`."""
    await api_csrf(request, principal)
    return await retry(request, principal, job_id)


async def retry(request: Request, principal: Any, job_id: int) -> dict[str, Any]:
    ctx = ctx_of(request)
    store = JobStore(ctx.catalog)
    if not await ctx.write(store.retry, job_id):
        job = await ctx.db(store.get, job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        raise HTTPException(409, f"job {job_id} is running")
    await audit(request, "job_retry", principal, target=str(job_id))
    job = await ctx.db(store.get, job_id)
    if job is None:  # removed meanwhile
        raise HTTPException(404, f"no job {job_id}")
    return job_out(job)
