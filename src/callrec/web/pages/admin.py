"""The admin pages: users (add, change, new one-time password, delete), everyone's API
tokens (revoke), the audit log and the job queue."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request, Response

from callrec.catalog import AUDIT_ACTIONS, ROLES, JobStore, UserInfo
from callrec.catalog.jobs import JOB_STATES
from callrec.exceptions import CatalogError
from callrec.web.api.accounts import audit_rows, drop_token, password_effects
from callrec.web.api.jobs import job_out, retry
from callrec.web.auth import Principal, audit, ctx_of
from callrec.web.ids import ID_RANGE, Id, parse_id
from callrec.web.pages.inputs import PageAdmin, field, posted_form, words
from callrec.web.pages.render import redirect, render, revealed
from callrec.web.recordings import BadRequest
from callrec.web.security import PasswordPolicyError, hash_password, new_one_time_password

router = APIRouter(include_in_schema=False)


async def _users(
    request: Request, principal: Principal, *, status_code: int = 200, **values: Any
) -> Response:
    ctx = ctx_of(request)
    users = await ctx.db(ctx.catalog.list_users)
    tokens = await ctx.db(ctx.catalog.list_tokens, None)
    values.setdefault("error", "")
    values.setdefault("secret", None)
    return render(
        request,
        "users.html",
        principal=principal,
        status_code=status_code,
        users=users,
        tokens=tokens,
        roles=sorted(ROLES),
        **values,
    )


@router.get("/admin/users")
async def users_page(request: Request, principal: PageAdmin) -> Response:
    return await _users(request, principal, secret=revealed(request, principal))


@router.post("/admin/users")
async def users_add(request: Request, principal: PageAdmin) -> Response:
    ctx = ctx_of(request)
    form = await posted_form(request, principal)
    password = field(form, "password")
    generated = not password
    if generated:
        password = new_one_time_password()
    try:
        password_hash = await ctx.db(hash_password, password)
        user = await ctx.write(
            ctx.catalog.create_user,
            field(form, "username"),
            password_hash=password_hash,
            role=field(form, "role") or "listener",
            extensions=words(field(form, "extensions")),
            devices=words(field(form, "devices")),
            must_change_password=generated,
        )
    except (CatalogError, PasswordPolicyError) as exc:
        return await _users(request, principal, status_code=400, error=str(exc))
    await audit(request, "user_add", principal, target=user.username, role=user.role)
    secret = (principal.user.id, (user.username, password)) if generated else None
    return redirect("/admin/users", f"Added {user.username}.", reveal=secret)


@router.post("/admin/users/{user_id:int}")
async def users_update(request: Request, user_id: Id, principal: PageAdmin) -> Response:
    ctx = ctx_of(request)
    form = await posted_form(request, principal)
    role = field(form, "role")
    extensions = words(field(form, "extensions"))
    devices = words(field(form, "devices"))
    try:
        user = await ctx.write(
            ctx.catalog.update_user, user_id, role=role, extensions=extensions, devices=devices
        )
    except CatalogError as exc:
        return await _users(request, principal, status_code=400, error=str(exc))
    await audit(
        request,
        "user_update",
        principal,
        target=user.username,
        role=role,
        extensions=list(user.extensions),
        devices=list(user.devices),
    )
    return redirect("/admin/users", f"Saved {user.username}.")


@router.post("/admin/users/{user_id:int}/password")
async def users_reset(request: Request, user_id: Id, principal: PageAdmin) -> Response:
    ctx = ctx_of(request)
    await posted_form(request, principal)
    password = new_one_time_password()
    password_hash = await ctx.db(hash_password, password)
    try:
        change = await ctx.write(
            ctx.catalog.set_password,
            user_id,
            password_hash=password_hash,
            must_change_password=True,
            keep_session=principal.session_hash if user_id == principal.user.id else None,
        )
    except CatalogError as exc:
        return await _users(request, principal, status_code=400, error=str(exc))
    user: UserInfo = change.user
    await audit(
        request,
        "user_update",
        principal,
        target=user.username,
        password_changed=True,
        **password_effects(change),
    )
    return redirect(
        "/admin/users",
        f"New one-time password for {user.username}.",
        reveal=(principal.user.id, (user.username, password)),
    )


@router.post("/admin/users/{user_id:int}/delete")
async def users_delete(request: Request, user_id: Id, principal: PageAdmin) -> Response:
    ctx = ctx_of(request)
    await posted_form(request, principal)
    try:
        user = await ctx.write(ctx.catalog.delete_user, user_id)
    except CatalogError as exc:
        return await _users(request, principal, status_code=400, error=str(exc))
    await audit(request, "user_delete", principal, target=user.username)
    return redirect("/admin/users", f"Deleted {user.username}.")


@router.post("/admin/tokens/{token_id:int}/revoke")
async def tokens_revoke(request: Request, token_id: Id, principal: PageAdmin) -> Response:
    """Any user's token (a lost laptop, someone who left); audited as ``token_revoke``."""
    await posted_form(request, principal)
    await drop_token(request, principal, token_id)
    return redirect("/admin/users#tokens", f"Token {token_id} revoked.")


@router.get("/admin/audit")
async def audit_page(request: Request, principal: PageAdmin) -> Response:
    params = request.query_params
    before = params.get("before_id")
    error = ""
    entries: list[Any] = []
    try:
        before_id = parse_id(before) if before else None
        if before and before_id is None:
            raise BadRequest(f"before_id must be a number from {ID_RANGE}")
        entries = await audit_rows(request, limit=100, before_id=before_id)
    except (BadRequest, CatalogError) as exc:
        error = str(exc)
    filters = {
        k: params.get(k, "") for k in ("username", "action", "recording_id", "since", "until", "tz")
    }
    base = {k: v for k, v in filters.items() if v}
    older = (
        "/admin/audit?" + urlencode({**base, "before_id": entries[-1].id})
        if len(entries) == 100
        else ""
    )
    return render(
        request,
        "audit.html",
        principal=principal,
        entries=entries,
        filters=filters,
        actions=sorted(AUDIT_ACTIONS),
        error=error,
        older=older,
        export="/api/v1/audit.csv?" + urlencode(base),
    )


# -- jobs (issue 16 part 3) -----------------------------------------------------------------

JOB_PAGE = 100


@router.get("/admin/jobs")
async def jobs_page(request: Request, principal: PageAdmin) -> Response:
    """The job queue: state, attempts, last error, a retry button; a job's history below
    it when ``?job=ID`` names one."""
    ctx = ctx_of(request)
    store = JobStore(ctx.catalog)
    params = request.query_params
    state = params.get("state", "")
    kind = params.get("kind", "").strip()
    before = params.get("before_id")
    error = ""
    jobs: list[Any] = []
    detail = None
    history: list[Any] = []
    try:
        if state and state not in JOB_STATES:
            raise BadRequest(f"state must be one of {', '.join(JOB_STATES)}")
        if len(kind) > 100:
            raise BadRequest("kind must be at most 100 characters")
        before_id = parse_id(before) if before else None
        if before and before_id is None:
            raise BadRequest(f"before_id must be a number from {ID_RANGE}")
        jobs = await ctx.db(
            store.list_jobs,
            state=state or None,
            kind=kind or None,
            limit=JOB_PAGE,
            before_id=before_id,
        )
        if params.get("job"):
            job_id = parse_id(params["job"])
            if job_id is None:
                raise BadRequest(f"job must be a number from {ID_RANGE}")
            detail = await ctx.db(store.get, job_id)
            if detail is None:
                raise BadRequest(f"no job {job_id}")
            history = await ctx.db(store.attempts, job_id)
    except (BadRequest, CatalogError) as exc:
        error = str(exc)
    filters = {k: v for k, v in (("state", state), ("kind", kind)) if v}
    return render(
        request,
        "jobs.html",
        principal=principal,
        jobs=[(job, job_out(job)) for job in jobs],
        states=JOB_STATES,
        state=state,
        kind=kind,
        older=(
            "/admin/jobs?" + urlencode({**filters, "before_id": jobs[-1].id})
            if len(jobs) == JOB_PAGE
            else ""
        ),
        detail=detail,
        history=history,
        error=error,
    )


@router.post("/admin/jobs/{job_id:int}/retry")
async def jobs_retry(request: Request, job_id: Id, principal: PageAdmin) -> Response:
    await posted_form(request, principal)
    try:
        await retry(request, principal, job_id)
    except HTTPException as exc:
        return redirect("/admin/jobs", str(exc.detail))
    return redirect(f"/admin/jobs?job={job_id}", f"Job {job_id} queued again.")
