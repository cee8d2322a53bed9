"""Signing in (``/login``: its own CSRF cookie, the failed-attempts throttle, the session
cookie) and out (``/logout``)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response

from callrec.web.auth import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Principal,
    audit,
    client_address,
    ctx_of,
    is_https,
    optional_principal,
    retry_after,
    wait_text,
)
from callrec.web.pages.inputs import SignedIn, field, posted_form
from callrec.web.pages.render import redirect, render
from callrec.web.security import digest, new_secret, same, verify_password

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    """Only a path on this site, never ``//evil`` or ``https://evil``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/recordings"
    return target


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
    username = field(form, "username").lower()
    password = form.get("password")
    password = password if isinstance(password, str) else ""
    target = _safe_next(field(form, "next"))
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not same(cookie, field(form, "csrf")):
        return _login_form(
            request,
            next=target,
            error="The sign-in form expired; please try again.",
            username=username,
            status_code=400,
        )
    client = client_address(request)
    wait = ctx.throttle.wait(username, client)
    if wait:
        await audit(request, "sign_in_failed", None, username=username, reason="throttled")
        return _throttled(request, target, username, wait)
    found = await ctx.db(ctx.catalog.user_credentials, username) if username else None
    ok = await ctx.db(verify_password, found[1] if found else None, password)
    if found is None or not ok:
        ctx.throttle.failed(username, client, known=found is not None)
        reason = "unknown user" if found is None else "wrong password"
        # Past the address's ceiling every failure answers 429 alike (made-up name or
        # wrong password: no way to tell which names exist); a right password still works.
        address_wait = ctx.throttle.address_wait(client)
        await audit(
            request,
            "sign_in_failed",
            None,
            username=username,
            reason=reason,
            **({"address_throttled": True} if address_wait else {}),
        )
        if address_wait:
            return _throttled(request, target, username, address_wait)
        return _login_form(
            request,
            next=target,
            error="Wrong user name or password.",
            username=username,
            status_code=401,
        )
    user = found[0]
    ctx.throttle.succeeded(username, client)
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


def _throttled(request: Request, target: str, username: str, wait: float) -> Response:
    seconds = retry_after(wait)
    response = _login_form(
        request,
        next=target,
        error=f"Too many failed attempts; try again in {wait_text(seconds)}.",
        username=username,
        status_code=429,
    )
    response.headers["retry-after"] = str(seconds)
    return response


@router.post("/logout")
async def logout(request: Request, principal: SignedIn) -> Response:
    await posted_form(request, principal)
    ctx = ctx_of(request)
    if principal.session_hash:
        await ctx.write(ctx.catalog.delete_web_session, principal.session_hash)
    await audit(request, "sign_out", principal)
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
