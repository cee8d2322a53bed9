"""Server-rendered pages: sign-in, recordings list and page, live calls, account, admin.

Forms post with the session's CSRF token; every page works without JavaScript, and
``static/app.js`` adds in-place search with history, local times, the waveform and the
live table.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup, escape
from starlette.datastructures import FormData

from callrec.catalog import AUDIT_ACTIONS, ROLES, UserInfo
from callrec.catalog.records import STATUSES
from callrec.catalog.webrecords import SORTS
from callrec.exceptions import CatalogError
from callrec.web.api.accounts import audit_rows, drop_token, issue_token
from callrec.web.api.notes import change_tag, create_note, remove_note
from callrec.web.api.recordings import bulk_response, remove_recording
from callrec.web.auth import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Forbidden,
    Principal,
    audit,
    check_csrf,
    client_address,
    ctx_of,
    is_https,
    optional_principal,
    require_admin,
    require_user,
)
from callrec.web.media import FORMATS
from callrec.web.recordings import (
    FILTER_PARAMS,
    BadRequest,
    parse_ids,
    quality,
    search_query,
    visible_recording,
)
from callrec.web.security import (
    PasswordPolicyError,
    digest,
    hash_password,
    new_one_time_password,
    new_secret,
    same,
    verify_password,
)

router = APIRouter(include_in_schema=False)

FLASH_COOKIE: Final = "callrec_flash"
PAGE_SIZES: Final = (25, 50, 100, 200)
CODECS: Final = ("PCMA", "PCMU", "G722")
SORT_LABELS: Final = {
    "-start_time": "Newest first",
    "start_time": "Oldest first",
    "-duration": "Longest first",
    "duration": "Shortest first",
    "local_number": "Local number",
    "-local_number": "Local number (desc)",
    "remote_number": "Remote number",
    "-remote_number": "Remote number (desc)",
}
assert set(SORT_LABELS) == SORTS


# -- rendering -----------------------------------------------------------------------------


def _time(value: datetime | None, style: str = "datetime") -> Markup:
    """A <time> the browser's script shows in its own time zone (UTC text until then)."""
    if value is None:
        return Markup("")
    iso = value.astimezone(UTC).isoformat()
    text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" data-style="{}">{}</time>').format(iso, style, text)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _size(value: int | None) -> str:
    if value is None:
        return ""
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def _party(number: str, name: str) -> Markup:
    if name:
        return Markup("{} <span class='muted'>{}</span>").format(number, name)
    return Markup(escape(number))


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent.parent / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(time=_time, duration=_duration, size=_size)
_env.globals.update(party=_party, sort_labels=SORT_LABELS, formats=FORMATS)


def render(
    request: Request,
    template: str,
    *,
    principal: Principal | None,
    status_code: int = 200,
    **values: Any,
) -> HTMLResponse:
    flash = request.cookies.get(FLASH_COOKIE, "")
    html = _env.get_template(template).render(
        request=request,
        principal=principal,
        user=principal.user if principal else None,
        csrf=principal.csrf if principal else "",
        flash=flash[:300],
        path=request.url.path,
        **values,
    )
    response = HTMLResponse(html, status_code=status_code)
    response.headers["cache-control"] = "no-store"
    if flash:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def error_page(request: Request, status: int, detail: str) -> HTMLResponse:
    principal = getattr(request.state, "principal", None)
    return render(
        request,
        "error.html",
        principal=principal,
        status_code=status,
        status=status,
        detail=detail,
    )


def redirect(url: str, flash: str = "") -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    if flash:
        response.set_cookie(FLASH_COOKIE, flash, max_age=60, httponly=True, samesite="lax")
    return response


def _safe_next(target: str | None) -> str:
    """Only a path on this site, never ``//evil`` or ``https://evil``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/recordings"
    return target


async def _form(request: Request, principal: Principal) -> FormData:
    form = await request.form()
    supplied = form.get("csrf")
    check_csrf(principal, supplied if isinstance(supplied, str) else None)
    return form


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _words(text: str) -> list[str]:
    return [w for w in text.replace(",", " ").split() if w]


async def page_user(request: Request) -> Principal:
    """A signed-in user who has set their own password (else: to the account page)."""
    principal = await require_user(request)
    first_steps = ("/account", "/account/password")
    if principal.user.must_change_password and request.url.path not in first_steps:
        raise _MustChangePassword()
    return principal


class _MustChangePassword(HTTPException):
    def __init__(self) -> None:
        super().__init__(303, "set a new password first", headers={"location": "/account"})


PageUser = Annotated[Principal, Depends(page_user)]
PageAdmin = Annotated[Principal, Depends(require_admin)]
SignedIn = Annotated[Principal, Depends(require_user)]


# -- sign in and out -----------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request, next: str = "") -> Response:
    if await optional_principal(request) is not None:
        return redirect(_safe_next(next))
    return _login_form(request, next=next)


def _login_form(
    request: Request, *, next: str, error: str = "", username: str = "", status_code: int = 200
) -> Response:
    token = new_secret()
    response = render(
        request,
        "login.html",
        principal=None,
        status_code=status_code,
        login_csrf=token,
        next=_safe_next(next),
        error=error,
        username=username,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
        path="/login",
    )
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    ctx = ctx_of(request)
    form = await request.form()
    username = _field(form, "username").lower()
    password = form.get("password")
    password = password if isinstance(password, str) else ""
    target = _safe_next(_field(form, "next"))
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not same(cookie, _field(form, "csrf")):
        return _login_form(
            request,
            next=target,
            error="The sign-in form expired; please try again.",
            username=username,
            status_code=400,
        )
    client = client_address(request)
    if ctx.throttle.blocked(username, client):
        await audit(request, "sign_in_failed", None, username=username, reason="throttled")
        return _login_form(
            request,
            next=target,
            error="Too many failed attempts; wait a few minutes.",
            username=username,
            status_code=429,
        )
    found = await ctx.db(ctx.catalog.user_credentials, username) if username else None
    ok = await ctx.db(verify_password, found[1] if found else None, password)
    if found is None or not ok:
        ctx.throttle.failed(username, client)
        reason = "unknown user" if found is None else "wrong password"
        await audit(request, "sign_in_failed", None, username=username, reason=reason)
        return _login_form(
            request,
            next=target,
            error="Wrong user name or password.",
            username=username,
            status_code=401,
        )
    user = found[0]
    ctx.throttle.succeeded(username)
    cookie_value = new_secret()
    await ctx.write(
        ctx.catalog.create_web_session,
        digest(cookie_value),
        user_id=user.id,
        csrf_token=new_secret(),
        expires_at=datetime.now(UTC) + ctx.session_lifetime(),
        client_address=client,
        user_agent=request.headers.get("user-agent", ""),
    )
    await ctx.write(ctx.catalog.record_login, user.id)
    principal = Principal(user=user, via="session")
    await audit(request, "sign_in", principal)
    response = redirect("/account" if user.must_change_password else target)
    response.set_cookie(
        SESSION_COOKIE,
        cookie_value,
        httponly=True,
        samesite="lax",
        secure=is_https(request),
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request, principal: SignedIn) -> Response:
    await _form(request, principal)
    ctx = ctx_of(request)
    if principal.session_hash:
        await ctx.write(ctx.catalog.delete_web_session, principal.session_hash)
    await audit(request, "sign_out", principal)
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


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
        query = search_query(params, limit=limit, cursor=params.get("cursor") or None)
        result = await ctx.db(ctx.catalog.search, query, principal.scope)
        items = result.items
    except (BadRequest, CatalogError) as exc:
        error = str(exc)
    tags = await ctx.db(ctx.catalog.tags_of, [r.id for r in items])
    devices = await _devices(request, principal)
    tag_counts = await ctx.db(ctx.catalog.tag_counts, principal.scope)
    filters = {k: params.get(k, "") for k in (*FILTER_PARAMS, "tz")}
    base = {k: v for k, v in filters.items() if v}
    if limit != 50:
        base["limit"] = str(limit)
    next_url = (
        "/recordings?" + urlencode({**base, "cursor": result.next_cursor})
        if result and result.next_cursor
        else ""
    )
    first_url = "/recordings?" + urlencode(base) if params.get("cursor") else ""
    return render(
        request,
        "recordings.html",
        principal=principal,
        items=items,
        tags=tags,
        qualities={r.id: quality(r) for r in items},
        result=result,
        error=error,
        filters=filters,
        limit=limit,
        page_sizes=PAGE_SIZES,
        devices=devices,
        tag_counts=tag_counts,
        codecs=CODECS,
        statuses=sorted(STATUSES),
        next_url=next_url,
        first_url=first_url,
        zip_max=ctx.settings.web_zip_max_files,
    )


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


@router.post("/recordings/zip")
async def recordings_zip(request: Request, principal: PageUser) -> Response:
    form = await _form(request, principal)
    ids = parse_ids([v for v in form.getlist("id") if isinstance(v, str)])
    return await bulk_response(request, principal, ids)


@router.get("/recordings/{rec_id:int}")
async def recording_page(request: Request, rec_id: int, principal: PageUser) -> Response:
    ctx = ctx_of(request)
    rec = await visible_recording(ctx, principal, rec_id)
    tags = (await ctx.db(ctx.catalog.tags_of, [rec.id])).get(rec.id, [])
    notes = await ctx.db(ctx.catalog.notes, rec.id)
    history = (
        await ctx.db(ctx.catalog.audit_entries, recording_id=rec.id, limit=20)
        if principal.is_admin
        else []
    )
    shown = {k: v for k, v in rec.extra.items() if v not in ({}, [], "", None)}
    extra = json.dumps(shown, ensure_ascii=False, indent=1) if shown else ""
    return render(
        request,
        "recording.html",
        principal=principal,
        rec=rec,
        tags=tags,
        notes=notes,
        history=history,
        q=quality(rec),
        extra=extra,
    )


@router.post("/recordings/{rec_id:int}/notes")
async def note_add(request: Request, rec_id: int, principal: PageUser) -> Response:
    form = await _form(request, principal)
    await create_note(request, principal, rec_id, _field(form, "text"))
    return redirect(f"/recordings/{rec_id}#notes", "Note added.")


@router.post("/recordings/{rec_id:int}/notes/{note_id:int}/delete")
async def note_delete(request: Request, rec_id: int, note_id: int, principal: PageUser) -> Response:
    await _form(request, principal)
    await remove_note(request, principal, note_id)
    return redirect(f"/recordings/{rec_id}#notes", "Note deleted.")


@router.post("/recordings/{rec_id:int}/tags")
async def tag_add(request: Request, rec_id: int, principal: PageUser) -> Response:
    form = await _form(request, principal)
    for tag in _words(_field(form, "tag")):
        await change_tag(request, principal, rec_id, tag, add=True)
    return redirect(f"/recordings/{rec_id}#tags")


@router.post("/recordings/{rec_id:int}/tags/remove")
async def tag_remove(request: Request, rec_id: int, principal: PageUser) -> Response:
    form = await _form(request, principal)
    await change_tag(request, principal, rec_id, _field(form, "tag"), add=False)
    return redirect(f"/recordings/{rec_id}#tags")


@router.post("/recordings/{rec_id:int}/delete")
async def recording_delete(request: Request, rec_id: int, principal: PageUser) -> Response:
    if not principal.is_admin:
        raise Forbidden("deleting recordings needs the admin role")
    await _form(request, principal)
    await remove_recording(request, principal, rec_id)
    return redirect("/recordings", f"Recording {rec_id} deleted.")


# -- live ----------------------------------------------------------------------------------


@router.get("/live")
async def live_page(request: Request, principal: PageUser) -> Response:
    sessions = ctx_of(request).live.sessions(principal.scope)
    return render(request, "live.html", principal=principal, sessions=sessions)


# -- account -------------------------------------------------------------------------------


async def _account(
    request: Request, principal: Principal, *, status_code: int = 200, **values: Any
) -> Response:
    ctx = ctx_of(request)
    tokens = await ctx.db(ctx.catalog.list_tokens, principal.user.id)
    values.setdefault("error", "")
    values.setdefault("new_token", "")
    return render(
        request,
        "account.html",
        principal=principal,
        status_code=status_code,
        tokens=tokens,
        **values,
    )


@router.get("/account")
async def account_page(request: Request, principal: PageUser) -> Response:
    return await _account(request, principal)


@router.post("/account/password")
async def account_password(request: Request, principal: PageUser) -> Response:
    ctx = ctx_of(request)
    form = await _form(request, principal)
    current = form.get("current")
    new = form.get("new")
    confirm = form.get("confirm")
    if not all(isinstance(v, str) for v in (current, new, confirm)):
        raise BadRequest("fill in all three password fields")
    assert isinstance(current, str) and isinstance(new, str)
    found = await ctx.db(ctx.catalog.user_credentials, principal.user.username)
    if found is None or not await ctx.db(verify_password, found[1], current):
        return await _account(
            request, principal, status_code=400, error="The current password is wrong."
        )
    if new != confirm:
        return await _account(
            request, principal, status_code=400, error="The new passwords differ."
        )
    if new == current:
        return await _account(
            request, principal, status_code=400, error="Choose a password you did not use."
        )
    try:
        password_hash = await ctx.db(hash_password, new)
    except PasswordPolicyError as exc:
        return await _account(request, principal, status_code=400, error=str(exc))
    await ctx.write(
        ctx.catalog.update_user,
        principal.user.id,
        password_hash=password_hash,
        must_change_password=False,
        keep_session=principal.session_hash or None,
    )
    await audit(request, "password_change", principal, target=principal.user.username)
    return redirect("/recordings", "Password changed.")


@router.post("/account/tokens")
async def account_token(request: Request, principal: PageUser) -> Response:
    form = await _form(request, principal)
    days_text = _field(form, "days")
    try:
        days = float(days_text) if days_text else None
    except ValueError as exc:
        raise BadRequest("days must be a number") from exc
    if days is not None and days <= 0:
        raise BadRequest("days must be > 0")
    _info, token = await issue_token(request, principal, _field(form, "name"), days)
    return await _account(request, principal, new_token=token)


@router.post("/account/tokens/{token_id:int}/revoke")
async def account_token_revoke(request: Request, token_id: int, principal: PageUser) -> Response:
    await _form(request, principal)
    await drop_token(request, principal, token_id)
    return redirect("/account", "Token revoked.")


# -- admin ---------------------------------------------------------------------------------


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
    if principal.user.must_change_password:
        raise _MustChangePassword()
    return await _users(request, principal)


@router.post("/admin/users")
async def users_add(request: Request, principal: PageAdmin) -> Response:
    ctx = ctx_of(request)
    form = await _form(request, principal)
    password = _field(form, "password")
    generated = not password
    if generated:
        password = new_one_time_password()
    try:
        password_hash = await ctx.db(hash_password, password)
        user = await ctx.write(
            ctx.catalog.create_user,
            _field(form, "username"),
            password_hash=password_hash,
            role=_field(form, "role") or "listener",
            extensions=_words(_field(form, "extensions")),
            devices=_words(_field(form, "devices")),
            must_change_password=generated,
        )
    except (CatalogError, PasswordPolicyError) as exc:
        return await _users(request, principal, status_code=400, error=str(exc))
    await audit(request, "user_add", principal, target=user.username, role=user.role)
    secret = (user.username, password) if generated else None
    return await _users(request, principal, secret=secret)


@router.post("/admin/users/{user_id:int}")
async def users_update(request: Request, user_id: int, principal: PageAdmin) -> Response:
    ctx = ctx_of(request)
    form = await _form(request, principal)
    role = _field(form, "role")
    extensions = _words(_field(form, "extensions"))
    devices = _words(_field(form, "devices"))
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
        extensions=extensions,
        devices=devices,
    )
    return redirect("/admin/users", f"Saved {user.username}.")


@router.post("/admin/users/{user_id:int}/password")
async def users_reset(request: Request, user_id: int, principal: PageAdmin) -> Response:
    ctx = ctx_of(request)
    await _form(request, principal)
    password = new_one_time_password()
    password_hash = await ctx.db(hash_password, password)
    try:
        user: UserInfo = await ctx.write(
            ctx.catalog.update_user,
            user_id,
            password_hash=password_hash,
            must_change_password=True,
        )
    except CatalogError as exc:
        return await _users(request, principal, status_code=400, error=str(exc))
    await audit(request, "user_update", principal, target=user.username, password_changed=True)
    return await _users(request, principal, secret=(user.username, password))


@router.post("/admin/users/{user_id:int}/delete")
async def users_delete(request: Request, user_id: int, principal: PageAdmin) -> Response:
    ctx = ctx_of(request)
    await _form(request, principal)
    try:
        user = await ctx.write(ctx.catalog.delete_user, user_id)
    except CatalogError as exc:
        return await _users(request, principal, status_code=400, error=str(exc))
    await audit(request, "user_delete", principal, target=user.username)
    return redirect("/admin/users", f"Deleted {user.username}.")


@router.get("/admin/audit")
async def audit_page(request: Request, principal: PageAdmin) -> Response:
    params = request.query_params
    before = params.get("before_id")
    error = ""
    entries: list[Any] = []
    try:
        entries = await audit_rows(
            request, limit=100, before_id=int(before) if before and before.isdigit() else None
        )
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
